"""Helpers of the training stages: the loop, engines (plain, DeepSpeed), data, step state, the latent
cache, and the objectives beside flow matching (diffusion forcing, Flow-DPO). Nothing here is a stage."""
