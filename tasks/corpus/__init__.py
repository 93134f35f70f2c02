"""Synthetic film corpus: procedural H.264 films, each with an exact ground-truth sidecar."""

from tasks.corpus.lib.films import generate_corpus, generate_video
from tasks.corpus.lib.truth import load_truth

__all__ = ["generate_corpus", "generate_video", "load_truth"]
