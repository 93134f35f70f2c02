"""CFG-parallel diffusion forcing: the two classifier-free-guidance branches on two processes.

Every DiT call of a guided generation is two passes that differ only in the text (prompt or negative
prompt). Here process 0 runs the conditional pass and process 1 the unconditional one; after each row they
exchange predictions (`all_gather` over a torch.distributed group, gloo on CPU) and both take the same
guided solver step, so their latents never diverge and no latents travel. Both draw the same noise from the
same seeds; only process 0 decodes and returns the video. The result equals the single-process sampler's up
to float rounding (a batch of one instead of two in the DiT's matmuls).

Processes meet through a `FileStore` in a private temporary folder (no port to pick or collide on); a
process that fails takes its peer down instead of leaving it waiting in a collective.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from models.df_sampler import DFResult
from models.generate_config import GenerateConfig

WORLD_SIZE = 2  # one process per guidance branch


def _worker(rank: int, store_path: str, checkpoint: str, cfg_json: str, inputs: dict, threads: int,
            out_path: str, errors) -> None:
    import torch.distributed as dist

    from models.checkpoint import load_pipeline_components
    from models.df_sampler import DFSampler

    try:
        torch.set_num_threads(threads)
        store = dist.FileStore(store_path, WORLD_SIZE)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD_SIZE,
                                timeout=timedelta(minutes=30))
        try:
            sampler = DFSampler(load_pipeline_components(checkpoint), guidance_group=dist.group.WORLD)
            cfg = GenerateConfig.model_validate_json(cfg_json)
            if rank == 0:
                result = sampler.generate(cfg, **inputs)
                torch.save({"frames": torch.from_numpy(result.frames), "latents": result.latents}, out_path)
            else:  # the peer's share: its branch's predictions; nothing to decode
                for _ in sampler.latent_stream(cfg, **inputs):
                    pass
        finally:
            dist.destroy_process_group()
    except BaseException:
        errors.put((rank, traceback.format_exc()))
        raise


def generate_cfg_parallel(checkpoint: str, cfg: GenerateConfig, image: np.ndarray | None = None,
                          end_image: np.ndarray | None = None, video: np.ndarray | None = None,
                          threads: int = 1) -> DFResult:
    """Generate `cfg` from the checkpoint folder with its guidance branches on two CPU processes of `threads`
    intra-op threads each; same modes and output as `models.df_sampler.generate_df`."""
    if cfg.guidance_scale <= 1.0:
        raise ValueError("CFG-parallel generation splits the two guidance branches: set guidance_scale > 1 "
                         "(or generate in one process)")
    if cfg.teacache:
        raise ValueError("CFG-parallel generation does not run TeaCache: set teacache false")
    inputs = {k: v for k, v in (("image", image), ("end_image", end_image), ("video", video)) if v is not None}
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="reelflow-cfgp-") as tmp:
        out_path, errors = str(Path(tmp) / "result.pt"), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(rank, str(Path(tmp) / "store"), checkpoint,
                                                    cfg.model_dump_json(), inputs, threads, out_path, errors))
                 for rank in range(WORLD_SIZE)]
        for proc in procs:
            proc.start()
        try:
            while any(p.is_alive() for p in procs):
                if any(p.exitcode not in (None, 0) for p in procs):
                    break  # one failed: its peer would wait in a collective until the timeout
                procs[0].join(timeout=0.5)
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
                proc.join()
        failures = []
        while not errors.empty():
            failures.append(errors.get())
        if failures or any(p.exitcode != 0 for p in procs):
            detail = "\n".join(f"process {rank}:\n{tb}" for rank, tb in failures) or \
                f"exit codes {[p.exitcode for p in procs]}"
            raise RuntimeError(f"CFG-parallel generation failed:\n{detail}")
        saved = torch.load(out_path)
    return DFResult(frames=saved["frames"].numpy(), latents=saved["latents"])
