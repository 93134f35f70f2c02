"""Curation phase (report section 3.1): a stage per module (ingest, segment, clips, score, caption, datasets,
balance); filters/ and lib/ are the helpers those stages share."""
