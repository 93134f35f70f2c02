"""Captioning decode throughput, vLLM vs transformers, on one small Qwen2.5-VL folder (random weights).

The caption stage's cost on a GPU is the captioner's autoregressive decode (report section 3.2: SkyCaptioner-V1
captions every clip of the pool). Both backends load the same saved folder (a Qwen2.5-VL of about 0.5B language
parameters, the tiny BPE tokenizer of the embedded captioner) and generate exactly ``--new-tokens`` greedy tokens
(end of sequence ignored) for ``--prompts`` prompts in one batch; tokens/s = prompts x new tokens / wall seconds
after a warm-up. Text prompts only: the video prefill and the JSON constraint are left out so that both backends
do the same work (the constraint costs differ by backend and are measured by benchmarks/throughput.py on CPU).

    python benchmarks/caption_gpu.py --out gpu_caption.json            # a CUDA machine
    python benchmarks/caption_gpu.py --tiny --device cpu --out x.json  # the CPU dry run: tiny shapes

vLLM is optional (the ``gpu`` extra): where it cannot be imported its entry says so and transformers is still
measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.captioner_chat import SPECIAL_TOKENS  # noqa: E402
from models.captioner_tiny import build_tiny_tokenizer  # noqa: E402

SMALL = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
         "num_key_value_heads": 2, "mrope_section": [8, 12, 12]}  # Qwen2.5-0.5B-like (head_dim 64: 32 rotary pairs)
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "mrope_section": [4, 6, 6]}


def build_folder(folder: str, shape: dict, seed: int = 0) -> int:
    """A random Qwen2.5-VL of ``shape`` saved with the tiny tokenizer; returns its language parameter count."""
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tiny_tokenizer(seed=seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    torch.manual_seed(seed)
    text = {k: v for k, v in shape.items() if k != "mrope_section"}
    cfg = Qwen2_5_VLConfig(
        text_config={**text, "vocab_size": len(tokenizer), "max_position_embeddings": 4096,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": shape["mrope_section"]},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
                       "out_hidden_size": shape["hidden_size"], "fullatt_block_indexes": [1], "window_size": 56},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        torch_dtype="bfloat16")
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for n, p in model.named_parameters() if "visual" not in n)


def prompts(count: int) -> list[str]:
    return [f"Describe shot {i}: the camera, the subject, the light and the motion." for i in range(count)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_transformers(folder: str, device: str, count: int, new_tokens: int) -> dict:
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
    batch = tokenizer(prompts(count), return_tensors="pt", padding=True).to(device)

    def run(tokens: int) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)

    run(2)  # warm-up
    _sync(device)
    start = time.perf_counter()
    out = run(new_tokens)
    _sync(device)
    seconds = time.perf_counter() - start
    generated = int((out.shape[1] - batch.input_ids.shape[1]) * out.shape[0])
    return {"status": "ok", "seconds": seconds, "tokens": generated, "tokens_per_s": generated / seconds,
            "dtype": str(dtype).removeprefix("torch.")}


def measure_vllm(folder: str, count: int, new_tokens: int) -> dict:
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        return {"status": f"not measured: vllm cannot be imported ({type(exc).__name__}: {exc}); install the gpu extra"}
    llm = LLM(model=folder, dtype="bfloat16", seed=0, max_model_len=1024, limit_mm_per_prompt={"video": 0, "image": 0})
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)
    llm.generate(prompts(count), SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True), use_tqdm=False)
    start = time.perf_counter()
    outputs = llm.generate(prompts(count), params, use_tqdm=False)
    seconds = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"status": "ok", "seconds": seconds, "tokens": generated, "tokens_per_s": generated / seconds,
            "dtype": "bfloat16"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (the CPU dry run)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="reelflow-caption-gpu-") as folder:
        params = build_folder(folder, TINY if args.tiny else SMALL)
        result = {"what": "greedy decode tokens/s, same random Qwen2.5-VL folder, text prompts, EOS ignored",
                  "language_parameters": params, "prompts": args.prompts, "new_tokens": args.new_tokens,
                  "device": args.device, "transformers": measure_transformers(folder, args.device, args.prompts,
                                                                             args.new_tokens)}
        result["vllm"] = measure_vllm(folder, args.prompts, args.new_tokens) if args.device.startswith("cuda") \
            else {"status": "not measured: vLLM runs on CUDA only"}
    if result["vllm"].get("status") == "ok":
        result["vllm_over_transformers"] = result["vllm"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
