"""SkyCaptioner (report section 3.2): a Qwen2.5-VL model that turns a clip into the structured
caption JSON (``models.caption_schema``), with the output constrained to that schema.

Two backends, one contract (``caption_batch([(frames, fps), ...]) -> [CaptionResult, ...]``):

* :class:`TransformersCaptioner` (CPU, and GPU without vLLM): ``Qwen2_5_VLForConditionalGeneration``
  from a folder, video frames patchified here (:func:`video_inputs`: the Qwen2-VL video layout, so
  no torchvision-backed video processor is needed), clips generated in batches, generation masked by our
  schema walker compiled into a token automaton (``models.json_constrained``, ``models.token_automaton``)
  so even a randomly initialised model emits a valid caption.
* :class:`VLLMCaptioner` (GPU, the ``gpu`` extra): vLLM batched generation with guided JSON
  decoding over the same schema. Import-guarded: nothing imports vllm unless it is chosen.

An output that fails validation (or a generation that raises) is retried with seeded sampling; after
the retries the clip's result carries the error, never an exception that kills the batch. The tiny
profile builds a random tiny Qwen2.5-VL and a BPE tokenizer (``tokenizers``, trained offline on
caption-like text) once into a folder, so the production ``from_pretrained`` path runs unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from infra.config_caption import CaptionerConfig
from models.caption_schema import StructuredCaption, caption_json_schema
from models.captioner_chat import MARKER, SPECIAL_TOKENS, SYSTEM_PROMPT, USER_PROMPT  # noqa: F401 (re-exported)
from models.captioner_tiny import build_tiny_captioner  # noqa: F401 (re-exported)
from models.json_constrained import SchemaWalker
from models.token_automaton import ConstrainedLogits, automaton_for

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # Qwen2-VL uses the OpenAI CLIP normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class CaptionResult:
    """One clip's outcome: a validated caption, or the error after every retry; ``attempts`` = 1
    when the first output validated."""

    caption: StructuredCaption | None
    error: str | None
    attempts: int


# --- video -> model inputs ----------------------------------------------------------------------
def sample_indices(num_frames: int, fps: float, sample_fps: float, max_frames: int) -> np.ndarray:
    """Frame indices at ``sample_fps`` (report: 2 fps), at most ``max_frames``, at least 2."""
    if num_frames <= 0:
        return np.zeros(0, int)
    step = max(1.0, fps / sample_fps, num_frames / max_frames)
    idx = np.unique(np.minimum(np.arange(step / 2, num_frames, step).astype(int), num_frames - 1))
    return idx if len(idx) >= 2 else np.array([0, num_frames - 1])


def fit_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL sizing: both sides multiples of ``factor`` (patch x merge), aspect kept, area
    within ``[min_pixels, max_pixels]``."""
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h, w = max(factor, math.floor(height / scale / factor) * factor), max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * scale / factor) * factor, math.ceil(width * scale / factor) * factor
    return h, w


def video_inputs(frames: np.ndarray, vision_cfg, min_pixels: int, max_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, H, W, 3) uint8 RGB -> (``pixel_values_videos`` (patches, C*tp*p*p), ``video_grid_thw`` (1, 3)).

    Patch order follows Qwen2-VL: time groups of ``temporal_patch_size`` frames, then 2x2 merge
    windows in raster order, then the patches inside a window; each patch flattened as (C, tp, p, p)."""
    p, m, tp = vision_cfg.patch_size, vision_cfg.spatial_merge_size, vision_cfg.temporal_patch_size
    h, w = fit_size(frames.shape[1], frames.shape[2], p * m, min_pixels, max_pixels)
    x = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float32) / 255
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    if len(x) % tp:  # pad time with the last frame
        x = np.concatenate([x, np.repeat(x[-1:], tp - len(x) % tp, axis=0)])
    gt, gh, gw = len(x) // tp, h // p, w // p
    x = x.transpose(0, 3, 1, 2).reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, 3 * tp * p * p)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor([[gt, gh, gw]])


def chat_prompt(video_tokens: int) -> str:
    """Qwen chat format with one video (its ``<|video_pad|>`` expanded to the merged patch count)."""
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<|vision_start|>"
            f"{'<|video_pad|>' * video_tokens}<|vision_end|>{USER_PROMPT}<|im_end|>\n<|im_start|>assistant\n")


def token_texts(tokenizer) -> list[str | None]:
    """Each token id's decoded text (None for special tokens): what the schema walker matches."""
    special = set(tokenizer.all_special_ids)
    return [None if i in special else tokenizer.decode([i], clean_up_tokenization_spaces=False)
            for i in range(len(tokenizer))]


def parse_caption(text: str) -> StructuredCaption:
    return StructuredCaption.model_validate_json(text)


class TransformersCaptioner:
    """Loads the model once; ``caption_batch`` generates for ``batch_size`` clips at once (left-padded prompts:
    the per-step overhead of ``generate`` and of the tiny model's forward is paid once per batch, not per clip)."""

    def __init__(self, model_path: str, cfg: CaptionerConfig, seed: int = 0):
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        self.cfg, self.seed = cfg, seed
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"  # a batch's prompts end together: generation continues all of them
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path).eval()
        walker = SchemaWalker(caption_json_schema(), string_cap=cfg.string_cap)
        eos = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.automaton = automaton_for(walker, token_texts(self.tokenizer), [eos], self.model.config.text_config.vocab_size)
        self.constraint = self.automaton.constraint
        self.max_new_tokens = walker.max_chars() + 1  # every token emits >= 1 character
        pad = self.tokenizer.pad_token_id
        self.eos, self.pad = eos, eos if pad is None else pad

    @torch.no_grad()
    def generate_batch(self, videos: list[tuple[np.ndarray, float]], attempt: int = 0) -> list[str]:
        """One constrained generation per video (sampled frames (T, H, W, 3) taken at ``fps``), all at once."""
        vision = self.model.config.vision_config
        inputs = [video_inputs(frames, vision, self.cfg.min_pixels, self.cfg.max_pixels) for frames, _ in videos]
        prompts = [chat_prompt(int(grid.prod()) // vision.spatial_merge_size ** 2) for _, grid in inputs]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        sample = self.cfg.do_sample or attempt > 0
        if sample:
            torch.manual_seed(self.seed * 1000 + attempt)
        length = enc.input_ids.shape[1]
        out = self.model.generate(
            input_ids=enc.input_ids, attention_mask=enc.attention_mask,
            pixel_values_videos=torch.cat([p for p, _ in inputs]), video_grid_thw=torch.cat([g for _, g in inputs]),
            second_per_grid_ts=torch.tensor([vision.temporal_patch_size / fps for _, fps in videos]),
            logits_processor=[ConstrainedLogits(self.automaton, length)], max_new_tokens=self.max_new_tokens,
            do_sample=sample, temperature=self.cfg.temperature if sample else None, top_k=None, top_p=None,
            eos_token_id=self.eos, pad_token_id=self.pad)
        return [self.constraint.decode(row[length:].tolist()) for row in out]

    def generate(self, frames: np.ndarray, fps: float, attempt: int = 0) -> str:
        """One constrained generation for sampled frames (T, H, W, 3) taken at ``fps``."""
        return self.generate_batch([(frames, fps)], attempt)[0]

    def caption(self, frames: np.ndarray, fps: float, first: str | Exception | None = None) -> CaptionResult:
        """Validated caption, retried (seeded sampling) on an invalid output or a failed generation. ``first``:
        the first attempt's output when it was generated already (in a batch)."""
        reasons = []
        for attempt in range(self.cfg.retries + 1):
            try:
                text = first if attempt == 0 and first is not None else self.generate(frames, fps, attempt)
                if isinstance(text, Exception):
                    raise text
                return CaptionResult(parse_caption(text), None, attempt + 1)
            except Exception as exc:  # invalid JSON or a failed generation: retry, then report
                reasons.append(f"attempt {attempt}: {type(exc).__name__}: {str(exc)[:200]}")
        return CaptionResult(None, "; ".join(reasons), len(reasons))

    def caption_batch(self, videos: list[tuple[np.ndarray, float]]) -> list[CaptionResult]:
        """First attempts ``batch_size`` clips at a time; a clip whose output does not validate is retried alone."""
        results = []
        for start in range(0, len(videos), self.cfg.batch_size):
            chunk = videos[start:start + self.cfg.batch_size]
            if len(chunk) == 1:
                results.append(self.caption(*chunk[0]))
                continue
            try:
                firsts: list[str | Exception] = list(self.generate_batch(chunk, 0))
            except Exception as exc:  # the batch failed as a whole: each clip's first attempt failed with it
                firsts = [exc] * len(chunk)
            results += [self.caption(frames, fps, first) for (frames, fps), first in zip(chunk, firsts, strict=True)]
        return results


class VLLMCaptioner:
    """GPU backend: vLLM batches every clip of a call; JSON-schema guided decoding keeps outputs
    valid (invalid ones, e.g. a truncated generation, are retried in a smaller batch)."""

    def __init__(self, model_path: str, cfg: CaptionerConfig, seed: int = 0):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:  # the gpu extra is absent (CPU image)
            raise RuntimeError("captioner.backend=vllm needs vllm (pip install '.[gpu]' on a CUDA machine); "
                               "use captioner.backend=transformers on CPU") from exc
        self.cfg, self.seed = cfg, seed
        self.llm = LLM(model=model_path, limit_mm_per_prompt={"video": 1}, seed=seed,
                       gpu_memory_utilization=cfg.gpu_memory_utilization, tensor_parallel_size=cfg.tensor_parallel_size,
                       mm_processor_kwargs={"min_pixels": cfg.min_pixels, "max_pixels": cfg.max_pixels})
        schema = caption_json_schema()
        try:  # vLLM >= 0.10.2 names it structured outputs; older releases guided decoding
            from vllm.sampling_params import StructuredOutputsParams
            guided = {"structured_outputs": StructuredOutputsParams(json=schema)}
        except ImportError:
            from vllm.sampling_params import GuidedDecodingParams
            guided = {"guided_decoding": GuidedDecodingParams(json=schema)}
        budget = SchemaWalker(schema, string_cap=cfg.string_cap).max_chars()
        self.params = [SamplingParams(temperature=0.0 if attempt == 0 and not cfg.do_sample else cfg.temperature,
                                      seed=seed + attempt, max_tokens=budget, **guided)
                       for attempt in range(cfg.retries + 1)]

    def caption_batch(self, videos: list[tuple[np.ndarray, float]]) -> list[CaptionResult]:
        results = [CaptionResult(None, "not attempted", 0) for _ in videos]
        todo = list(range(len(videos)))
        for attempt, params in enumerate(self.params, start=1):
            if not todo:
                break
            prompts = [{"prompt": chat_prompt(1), "multi_modal_data": {"video": videos[i][0]},
                        "mm_processor_kwargs": {"fps": videos[i][1]}} for i in todo]
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            failed = []
            for i, out in zip(todo, outputs, strict=True):
                try:
                    results[i] = CaptionResult(parse_caption(out.outputs[0].text), None, attempt)
                except Exception as exc:
                    results[i] = CaptionResult(None, f"attempt {attempt - 1}: {type(exc).__name__}: {str(exc)[:200]}", attempt)
                    failed.append(i)
            todo = failed
        return results


def load_captioner(model_path: str, cfg: CaptionerConfig, seed: int = 0):
    return (VLLMCaptioner if cfg.backend == "vllm" else TransformersCaptioner)(model_path, cfg, seed)
