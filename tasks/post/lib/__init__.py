"""Helpers of the post-training stages: the pair audit (human labels) and the pairs summary. Nothing here
is a stage."""
