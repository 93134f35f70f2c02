"""What a pipeline run did, at a glance: read back from its published manifests (``_SUCCESS.json``), so a
resumed run summarises the stages an earlier attempt published as well as the ones it ran itself.

The data funnel follows the report's curation (section 3.1): films -> shots -> clips -> each dataset the
progressive profiles keep (D_256p ... D_720p_sft); the stage timeline and the final loss of every training
stage (sections 3.3-3.4) sit beside it. ``summarise`` is pure (manifests in, dict out); the charts and the
markdown are views of that dict.
"""

from __future__ import annotations

import math
import os

from infra import manifest as mf
from infra import storage
from infra.config import STAGE_ORDER
from infra.config_train import POST_STAGES, TRAIN_STAGES

DATASETS = tuple(s for s in STAGE_ORDER if s.startswith("D_"))
KNOWN = ("corpus", *STAGE_ORDER, *TRAIN_STAGES, *POST_STAGES)
TRAINED = (*TRAIN_STAGES, "dpo-1", "dpo-2", "dpo-3", "forcing", "sft-720p")


def published(run_uri: str) -> dict[str, mf.Manifest]:
    """Every published stage of the run folder by name, in the order they were published."""
    names = list(KNOWN)
    try:
        fs = storage.filesystem(run_uri)
        names += sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(run_uri, detail=False)
                        if os.path.basename(p.rstrip("/")).startswith("latents-"))
    except (OSError, ValueError):
        pass
    found = {n: m for n in names if (m := mf.load_success(storage.join(run_uri, n))) is not None}
    return dict(sorted(found.items(), key=lambda kv: kv[1].created_at - kv[1].seconds))


def funnel(stages: dict[str, mf.Manifest]) -> dict[str, int]:
    """films -> shots -> clips -> each dataset's kept rows, for the stages published so far."""
    out: dict[str, int] = {}
    if "ingest" in stages:
        m = stages["ingest"]
        out["videos"] = int(m.stats.get("readable", m.row_count - m.error_count))
    if "segment" in stages:
        out["shots"] = int(stages["segment"].stats.get("shots", stages["segment"].row_count))
    if "clips" in stages:
        m = stages["clips"]
        out["clips"] = int(m.stats.get("clips", m.row_count - m.error_count))
    for name in DATASETS:
        if name in stages:
            # a dataset is a view: its table is the whole scored pool with an in_<dataset> flag, so its
            # rows are not what it keeps; the stage publishes the kept count in its stats
            # (concept balancing publishes the samples it keeps after capping and repeating)
            stats = stages[name].stats
            kept = stats.get("kept", stats.get("samples_after"))
            if kept is not None:
                out[name] = int(kept)
    return out


def summarise(stages: dict[str, mf.Manifest], gates: dict[str, float] | None = None) -> dict:
    """Funnel, per-stage seconds and start offsets, final losses, the final video, the gates' bad-case rates."""
    t0 = min((m.created_at - m.seconds for m in stages.values()), default=0.0)
    timeline = {n: (round(m.created_at - m.seconds - t0, 2), round(m.seconds, 2)) for n, m in stages.items()}
    losses = {n: float(stages[n].stats["final_loss"]) for n in TRAINED
              if n in stages and isinstance(stages[n].stats.get("final_loss"), (int, float))}
    video = stages["video"].stats.get("video") if "video" in stages else None
    return {"funnel": funnel(stages), "timeline": timeline, "final_loss": losses, "video": video,
            "gates": dict(gates or {}), "stages": list(stages),
            "seconds": round(max((s + d for s, d in timeline.values()), default=0.0), 2)}


def metrics(summary: dict) -> dict[str, float]:
    """The parent run's summary metrics."""
    out = {f"funnel.{k}": float(v) for k, v in summary["funnel"].items()}
    out |= {f"seconds.{k}": float(d) for k, (_, d) in summary["timeline"].items()}
    out |= {f"final_loss.{k}": v for k, v in summary["final_loss"].items() if math.isfinite(v)}
    out |= {"stages_published": float(len(summary["stages"])), "pipeline_seconds": float(summary["seconds"])}
    return out


def markdown(run_id: str, profile: str, ok: bool, error: str | None, summary: dict,
             links: dict[str, str] | None = None) -> str:
    """The run's description: what ran, the outcome (and why it stopped), the funnel, gates, losses, timings."""
    outcome = "**FINISHED**" if ok else f"**FAILED**: {error or 'stopped'}"
    lines = [f"reelflow pipeline run `{run_id}` (profile `{profile}`): {outcome}", ""]
    if summary["funnel"]:
        lines += ["**Data funnel**: " + " → ".join(f"{k} {v}" for k, v in summary["funnel"].items()), ""]
    if summary["gates"]:
        lines += ["**Audit gates** (bad-case rate): " + ", ".join(f"{g} {r:.1%}" for g, r in summary["gates"].items()), ""]
    if summary["final_loss"]:
        lines += ["**Final loss**: " + ", ".join(f"{k} {v:.4f}" for k, v in summary["final_loss"].items()), ""]
    if summary["video"]:
        lines += [f"**Final video**: `{summary['video']}` (artifact summary/video.mp4)", ""]
    lines += [f"**Stages** ({len(summary['stages'])} published, {summary['seconds']:.0f} s wall):", "",
              "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {d:.1f} |" for name, (_, d) in summary["timeline"].items()]
    if links:
        lines += ["", "**MLflow runs**: " + ", ".join(f"[{n}]({u})" for n, u in links.items())]
    return "\n".join(lines)


def charts(summary: dict, out_dir: str) -> list[str]:
    """funnel.png and timeline.png (matplotlib, no display needed) for the stages published so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if summary["funnel"]:
        names, counts = list(summary["funnel"]), list(summary["funnel"].values())
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
        bars = ax.barh(names[::-1], counts[::-1], color="#3b7dd8")
        ax.bar_label(bars, padding=3)
        ax.set_xlabel("rows kept")
        ax.set_title("data funnel: films -> shots -> clips -> datasets")
        ax.margins(x=0.15)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, "funnel.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if summary["timeline"]:
        items = list(summary["timeline"].items())
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(items) + 1.2))
        for i, (name, (start, seconds)) in enumerate(items):
            colour = "#3b7dd8" if name in KNOWN[: len(STAGE_ORDER) + 1] else "#d8823b"
            ax.barh(len(items) - 1 - i, max(seconds, 0.2), left=start, color=colour)
        ax.set_yticks(range(len(items)), [n for n, _ in items][::-1], fontsize=8)
        ax.set_xlabel("seconds since the first stage started (blue: curation, orange: training)")
        ax.set_title("stage timeline")
        fig.tight_layout()
        paths.append(os.path.join(out_dir, "timeline.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
