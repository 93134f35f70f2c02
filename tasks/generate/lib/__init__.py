"""Helpers of generation: a checkpoint folder and settings -> an mp4. Nothing here is a stage."""
