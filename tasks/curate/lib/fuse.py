"""Caption fusion (report section 3.2, step 4): the structured caption -> a dense T2V prompt and a
sparse I2V prompt; the same path rewrites user prompts for generation (:func:`enhance_prompt`).

* T2V dense, in the report's order: shot information -> each subject's appearance, action,
  expression, position -> environment, lighting, camera motion.
* I2V sparse: the subjects (named, not described: the first frame shows them) with their temporal
  action and expression, and the camera motion; each of those fields is dropped with p = 0.1
  (``FuseConfig.i2v_drop_p``), seeded by the clip id, so a rerun gives the same prompt.

Backends: ``template`` (deterministic sentences: the tiny profile, and the fallback whenever the
LLM answers empty or overlong) and ``vllm`` (an instruct LLM, Qwen2.5-32B class in production,
rewrites the fields into prose; import-guarded, the ``gpu`` extra).
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from infra.config_caption import FuseConfig
from models.caption_schema import StructuredCaption, Subject

ANGLE_WORDS = {"eye level": "at eye level", "high": "from a high angle", "low": "from a low angle"}
LLM_INSTRUCTIONS = {
    "dense": ("Rewrite this structured video caption as one fluent paragraph for a text-to-video model. Order: "
              "shot type, angle and position; then each subject's appearance, action, expression and position; "
              "then environment, lighting and camera motion. Keep every fact, add none. Answer with the paragraph only."),
    "sparse": ("Rewrite this structured video caption as one or two short sentences for an image-to-video model: "
               "only the subjects' actions and expressions over time and the camera motion that are present. "
               "Do not describe appearance. Answer with the sentences only."),
    "enhance": ("Expand this video generation prompt into one fluent paragraph: shot type and angle, the subjects' "
                "appearance, action and expression, the environment, lighting and camera motion. Keep the user's "
                "intent and every stated fact. Answer with the paragraph only."),
}


def clean(text: str | None) -> str:
    """Collapse whitespace and strip stray punctuation at the ends (model text is free-form)."""
    return re.sub(r"\s+", " ", text or "").strip(" ,;.")


def sentence(text: str) -> str:
    text = clean(text)
    return f"{text[0].upper()}{text[1:]}." if text else ""


def _article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}" if noun else ""


def _expression(subject: Subject) -> str:
    e = subject.expression
    if e is None:
        return ""
    change = clean(e.change)
    return f"a {e.intensity} {e.emotion} expression" + (f" ({change})" if change else "")


def _subject_dense(subject: Subject, first: bool) -> str:
    noun = clean(subject.TYPES.sub_type) or subject.TYPES.type
    lead = "The main subject is" if subject.is_main_subject and first else "There is"
    parts = [f"{lead} {_article(noun)}", clean(subject.appearance), clean(subject.action)]
    expression = _expression(subject)
    parts += [f"with {expression}" if expression else "", clean(subject.position)]
    return sentence(", ".join(p for p in parts if p))


def ordered_subjects(caption: StructuredCaption) -> list[Subject]:
    main = caption.main_subject()
    return [main] + [s for s in caption.subjects if s is not main]


def t2v_dense(caption: StructuredCaption) -> str:
    """Shot -> subjects -> environment, lighting, camera motion (report section 3.2)."""
    shot = sentence(f"{_article(caption.shot_type)} shot {ANGLE_WORDS[caption.shot_angle]}, {caption.shot_position} view")
    subjects = [_subject_dense(s, i == 0) for i, s in enumerate(ordered_subjects(caption))]
    tail = [sentence(caption.environment), sentence(f"{clean(caption.lighting)} lighting" if clean(caption.lighting) else ""),
            sentence(f"camera: {caption.camera_motion.describe()}")]
    return " ".join(p for p in [shot, *subjects, *tail] if p)


def dropout_rng(clip_id: str, seed: int) -> np.random.Generator:
    """Stable across processes and runs (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sparse_fields(caption: StructuredCaption, drop_p: float, rng: np.random.Generator) -> dict:
    """What the I2V prompt may say, after field dropout: per subject its noun (kept) plus action
    and expression, and the camera motion; each droppable field survives with 1 - ``drop_p``."""
    keep = lambda: bool(rng.random() >= drop_p)  # noqa: E731 - one draw per field, in a fixed order
    subjects = []
    for s in ordered_subjects(caption):
        action, expression = (clean(s.action) if keep() else ""), (_expression(s) if keep() else "")
        subjects.append({"subject": clean(s.TYPES.sub_type) or s.TYPES.type, "action": action, "expression": expression})
    camera = caption.camera_motion.describe() if keep() else ""
    return {"subjects": subjects, "camera_motion": camera}


def i2v_sparse(fields: dict) -> str:
    parts = []
    for s in fields["subjects"]:
        if s["action"] or s["expression"]:
            said = ", ".join(p for p in (s["action"], f"with {s['expression']}" if s["expression"] else "") if p)
            parts.append(sentence(f"the {s['subject']} {said}"))
    if fields["camera_motion"]:
        parts.append(sentence(f"camera: {fields['camera_motion']}"))
    return " ".join(parts) or sentence(f"the {fields['subjects'][0]['subject']}")


class Fuser:
    """Holds the fusion backend (the LLM loads once per actor). ``fuse(clip_id, caption) ->
    (t2v, i2v)``; ``fallbacks`` counts LLM answers replaced by the template."""

    def __init__(self, cfg: FuseConfig):
        self.cfg, self.fallbacks, self.llm = cfg, 0, None
        if cfg.backend == "vllm":
            try:
                from vllm import LLM, SamplingParams
            except ImportError as exc:
                raise RuntimeError("fuse.backend=vllm needs vllm (the gpu extra); use fuse.backend=template on CPU") from exc
            if not cfg.llm_path:
                raise ValueError("fuse.llm_path: required when fuse.backend=vllm (an instruct LLM folder)")
            self.llm = LLM(model=cfg.llm_path, seed=cfg.seed)
            self.params = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)

    def _ask(self, mode: str, payloads: list[str], fallbacks: list[str]) -> list[str]:
        if self.llm is None:
            return fallbacks
        chats = [[{"role": "system", "content": LLM_INSTRUCTIONS[mode]}, {"role": "user", "content": p}] for p in payloads]
        try:
            answers = [o.outputs[0].text for o in self.llm.chat(chats, self.params, use_tqdm=False)]
        except Exception:  # a failed LLM call must not cost the clips their captions: template instead
            answers = [""] * len(payloads)
        out = []
        for answer, fallback in zip(answers, fallbacks, strict=True):
            ok = 0 < len(clean(answer)) <= self.cfg.max_chars
            self.fallbacks += not ok
            out.append(sentence(answer) if ok else fallback)
        return out

    def fuse_batch(self, items: list[tuple[str, StructuredCaption]]) -> list[tuple[str, str]]:
        sparse = [sparse_fields(c, self.cfg.i2v_drop_p, dropout_rng(cid, self.cfg.seed)) for cid, c in items]
        t2v = self._ask("dense", [c.model_dump_json() for _, c in items], [t2v_dense(c) for _, c in items])
        i2v = self._ask("sparse", [json.dumps(f) for f in sparse], [i2v_sparse(f) for f in sparse])
        return list(zip(t2v, i2v, strict=True))

    def fuse(self, clip_id: str, caption: StructuredCaption) -> tuple[str, str]:
        return self.fuse_batch([(clip_id, caption)])[0]

    def enhance(self, prompts: list[str]) -> list[str]:
        tidy = [sentence(p) for p in prompts]
        return self._ask("enhance", tidy, tidy)


def enhance_prompt(prompt: str, cfg: FuseConfig, fuser: Fuser | None = None) -> str:
    """A generation prompt through the fusion LLM (dense, T2V style); the template backend only
    tidies it (whitespace, capital, full stop): it has nothing to add without a model."""
    return (fuser or Fuser(cfg)).enhance([prompt])[0]
