"""A real-content development set: photographs from Debian's wallpaper packages filmed by a virtual
camera, edited and overlaid with frame-exact truth in the synthetic corpus's schema
(:mod:`tasks.corpus.lib.truth`), so the segment and filters benchmarks read both worlds alike."""
