"""Training phase (report sections 3.3, 3.4.3): the stages ``latents`` and ``training`` (pretrain-*, sft-*,
forcing); lib/ holds the loop, engines and objectives they share."""
