"""Helpers of the curation stages: audit gates and their verdicts, dataset views, caption fusion, the
sub-expert trainer. Nothing here is a stage."""
