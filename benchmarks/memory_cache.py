"""The latent cache's reader interface over in-memory samples (one bucket): benchmarks train on samples they
encode themselves, through the same training loop as the stages."""

from __future__ import annotations


class MemoryCache:
    def __init__(self, samples):
        self.samples = samples

    def buckets(self):
        return {"b": list(range(len(self.samples)))}

    def get(self, i):
        return self.samples[i]
