"""Training: flow-matching trainer, engines (plain, DeepSpeed), step checkpoints, stages (issue 5)."""
