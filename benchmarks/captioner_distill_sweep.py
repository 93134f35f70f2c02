"""Captioner distillation recipes compared on a validation split carved out of the TRAINING clips only (the
held-out clips of benchmarks/captioner_distill.py are never touched): the quarter of the training clips with
the lowest id hash is validation, the rest is fitted. Reads the teacher captions that
``benchmarks/captioner_distill.py --work DIR`` cached; one JSON line per recipe.

    python benchmarks/captioner_distill_sweep.py /tmp/cd/teacher-v20-s7.pkl \
        '[{"lr": 3e-3, "epochs": 12, "fw": 1}, {"lr": 3e-3, "epochs": 12, "fw": 5}]'
"""
import json
import os
import pickle
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from infra.config_caption import CaptionConfig  # noqa: E402
from models.caption_schema import StructuredCaption  # noqa: E402
from models.captioner import TransformersCaptioner  # noqa: E402
from models.captioner_tune import agreement, field_values, fine_tune, supervised_example  # noqa: E402
from tasks.curate.captioner_distill import _bucket, clip_samples, split_rows  # noqa: E402

torch.set_num_threads(1)
cache, variants = sys.argv[1], json.loads(sys.argv[2])
clips, rows, _ = pickle.load(open(cache, "rb"))
rows = [r for r, _ in rows]
rows = split_rows(rows, 0.25)
train = [r for r in rows if r["split"] == "train"]
inner = sorted(train, key=lambda r: _bucket(str(r["clip_id"])))
k = len(inner) // 4
val, fit = inner[:k], inner[k:]
print("fit", len(fit), "val", len(val), flush=True)
for name in ("camera.speed", "shot_type", "camera.tx", "shot_position"):
    print(name, Counter(field_values(StructuredCaption.model_validate_json(r["caption_json"]))[name] for r in fit))
cc = CaptionConfig(cache_dir=os.path.join(os.path.dirname(cache), "models"), torch_threads=1)
cap = cc.captioner
base = os.path.join(os.path.dirname(cache), "models", "captioner-tiny")
vids = {r["clip_id"]: clip_samples(r["clip_uri"], int(r["num_frames"]), float(r["fps"]), cap.sample_fps, cap.max_frames) for r in fit + val}
teacher = [StructuredCaption.model_validate_json(r["caption_json"]) for r in val]
for v in variants:
    stu = TransformersCaptioner(base, cap)
    ex = [supervised_example(stu.tokenizer, stu.model.config.vision_config, *vids[r["clip_id"]], r["caption_json"],
                             cap.min_pixels, cap.max_pixels, v.get("fw", 1.0)) for r in fit]
    t = time.time()
    torch.manual_seed(0)
    losses = fine_tune(stu.model, ex, lr=v["lr"], epochs=v["epochs"], batch=v.get("batch", 4), seed=0, weight_decay=v.get("wd", 0.0))
    after = agreement([r.caption for r in stu.caption_batch([vids[r["clip_id"]] for r in val])], teacher)
    print(json.dumps({"variant": v, "mean": round(float(np.mean(list(after.values()))), 3),
                      "after": {k: round(x, 2) for k, x in after.items()}, "loss": [round(losses[0], 3), round(losses[-1], 3)],
                      "s": round(time.time() - t)}), flush=True)
