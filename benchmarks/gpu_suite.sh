#!/usr/bin/env bash
# The GPU measurements, one script (planned for < 9 min on one H100), one JSON:
#   1. Wan-1.3B training step time and MFU, bf16, gradient checkpointing off and on (benchmarks/train_gpu.py)
#   2. diffusion-forcing generation of the 1.3B architecture at 540p, reelflow vs diffusers' pipeline on the
#      same random weights (benchmarks/generate.py)
#   3. TransNetV2 full-mode frames/s (models/transnet.py, every frame scored)
#   4. captioning decode tokens/s, vLLM vs transformers, on one small random Qwen2.5-VL folder
#      (benchmarks/caption_gpu.py; vLLM from the gpu extra, recorded as not measured where it cannot be imported)
#
#   benchmarks/gpu_suite.sh                 # on a GPU: writes benchmarks/results/gpu.json
#   benchmarks/gpu_suite.sh --dry-run OUT   # CPU, tiny shapes: every step runs, numbers mean nothing
#
# Each step's JSON is merged into one file that names the device and whether it was a dry run; a step that
# fails is recorded with its error, and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DRY=0
OUT=benchmarks/results/gpu.json
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; OUT=${2:-/tmp/reelflow-gpu-dry.json}; fi
WORK=$(mktemp -d -t reelflow-gpu-suite-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

run_step() {  # name, then the command; its JSON lands in $WORK/<name>.json, its log in $WORK/<name>.log
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$WORK/$name.log" 2>&1; then status=ok; else status="failed: $(tail -c 600 "$WORK/$name.log" | tr '\n"' ' ')"; fi
  echo "{\"status\": \"$status\", \"seconds\": $((SECONDS - start))}" >"$WORK/$name.status.json"
  echo "$name: $status ($((SECONDS - start)) s)" >&2
}

if [[ $DRY == 1 ]]; then
  TRAIN=(--profile tiny --frames 5 --height 32 --width 32 --text-len 16 --steps 2 --warmup 1)
  GEN=(--profile tiny --device cpu --height 32 --width 32 --steps 2 --base-num-frames 25 --num-frames 25
       --scenarios sync --repeats 1)
  TRANSNET_FRAMES=100
  CAPTION=(--tiny --device cpu --prompts 2 --new-tokens 4)
else
  TRAIN=(--profile wan-1.3b --frames 33 --height 256 --width 448 --steps 10 --warmup 3)
  GEN=(--profile wan-1.3b --device cuda --height 544 --width 960 --steps 10 --base-num-frames 97 --num-frames 97
       --scenarios sync --repeats 1)
  TRANSNET_FRAMES=20000
  CAPTION=(--device cuda --prompts 32 --new-tokens 256)
fi

run_step train_ckpt_off "$PY" benchmarks/train_gpu.py "${TRAIN[@]}" --out "$WORK/train_ckpt_off.json"
run_step train_ckpt_on "$PY" benchmarks/train_gpu.py "${TRAIN[@]}" --checkpointing --out "$WORK/train_ckpt_on.json"
run_step generate_540p "$PY" benchmarks/generate.py "${GEN[@]}" --out "$WORK/generate_540p.json"
run_step caption_vllm_vs_transformers "$PY" benchmarks/caption_gpu.py "${CAPTION[@]}" \
  --out "$WORK/caption_vllm_vs_transformers.json"
run_step transnet_full "$PY" - "$TRANSNET_FRAMES" "$WORK/transnet_full.json" <<'EOF'
import json, sys, time
import numpy as np, torch
sys.path.insert(0, ".")
from models.transnet import TransNet
frames, out = int(sys.argv[1]), sys.argv[2]
net = TransNet()  # full mode: every frame through the network (windows of 100, step 50)
thumbs = np.random.default_rng(0).integers(0, 256, (frames, 27, 48, 3), dtype=np.uint8)
net.predict(thumbs[:200])  # warm-up
if net.device.type == "cuda":
    torch.cuda.synchronize()
start = time.perf_counter()
net.predict(thumbs)
if net.device.type == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
json.dump({"frames": frames, "seconds": seconds, "frames_per_s": frames / seconds, "device": str(net.device),
           "bf16": net.bf16}, open(out, "w"), indent=1)
EOF

"$PY" - "$WORK" "$OUT" "$DRY" <<'EOF'
import json, os, platform, sys, time
import torch
work, out, dry = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
result = {"dry_run": dry, "measured": not dry and torch.cuda.is_available(),
          "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
          "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
for name in ("train_ckpt_off", "train_ckpt_on", "generate_540p", "caption_vllm_vs_transformers", "transnet_full"):
    entry = json.load(open(os.path.join(work, f"{name}.status.json")))
    path = os.path.join(work, f"{name}.json")
    if os.path.exists(path):
        entry["result"] = json.load(open(path))
    result[name] = entry
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
json.dump(result, open(out, "w"), indent=1)
print(out)
EOF
