"""Helpers of the corpus stage: the procedural film generator and its ground truth. Nothing here is a stage."""
