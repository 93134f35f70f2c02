"""Generation phase (report sections 3.4.2, 5.4-5.5): the ``video`` stage; lib/ holds the generator it
shares with ``reelflow generate``."""
