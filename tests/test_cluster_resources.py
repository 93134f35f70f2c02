"""Per-stage resources from the config reach Ray: a stage's actors ask for the GPUs and custom resources its
``ray.stages`` entry names (on a local Ray that advertises one GPU; no CUDA is needed to schedule on it)."""

from __future__ import annotations

import os

import pytest

from infra.config import ConfigError, load_config
from infra.raydata import StageResources, configure_resources, flat_map_rows


class LatentWorker:  # named like the latents stage's worker: its pool takes ray.stages.latents
    def __init__(self, tag: str):
        self.tag = tag

    def __call__(self, item: int) -> list[dict]:
        import ray

        return [{"item": item, "tag": self.tag, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 "resources": ray.get_runtime_context().get_assigned_resources()}]


def test_cluster_local_profile_points_at_the_topology():
    cfg = load_config("cluster-local")
    assert cfg.storage.run_root.startswith("s3://") and cfg.storage.s3_endpoint_url
    assert cfg.ray.address and cfg.tracking.mlflow_uri.startswith("http") and cfg.prefect.api_url.startswith("http")
    assert cfg.ray.stages["segment"].num_gpus == 1 and cfg.train.ray_train and cfg.train.max_failures > 0
    assert cfg.train.resolutions == load_config("tiny").train.resolutions  # the tiny models (extends: tiny)
    for gpu_profile in ("wan-1.3b", "wan-14b"):
        stages = load_config(gpu_profile).ray.stages
        assert all(stages[s].num_gpus and stages[s].num_gpus > 0 for s in ("segment", "caption", "pairs"))


def test_unknown_stage_in_ray_stages_is_refused():
    with pytest.raises(ValueError, match="unknown stage"):
        configure_resources({"captions": StageResources(num_gpus=1)})
    with pytest.raises(ConfigError):
        load_config("tiny", ["ray.stages.score.num_gpus=-1"])


def test_stage_actors_request_the_configured_gpu_and_custom_resources():
    import shutil
    import tempfile

    import ray
    import test_cluster_resources
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(test_cluster_resources)
    temp = tempfile.mkdtemp(prefix="rf-")  # short: Ray's socket paths must fit in 107 bytes
    if ray.is_initialized():  # an earlier test's in-process Ray (the pipeline's) must not answer for this one
        ray.shutdown()
    ray.init(num_cpus=1, num_gpus=1, resources={"worker_node": 1}, include_dashboard=False, _temp_dir=temp,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        configure_resources({"latents": StageResources(actors=1, num_cpus=0.5, num_gpus=1, memory_gb=0.25,
                                                       custom={"worker_node": 1})})
        rows = flat_map_rows([1, 2], LatentWorker, {"tag": "x"}, concurrency=2)
    finally:
        configure_resources({})
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert sorted(r["item"] for r in rows) == [1, 2]  # (the pipeline sets preserve_order in init_ray)
    for row in rows:
        assert row["gpus"] == "0" and row["resources"]["GPU"] == 1 and row["resources"]["worker_node"] == 1
        assert row["resources"]["CPU"] == 0.5 and row["resources"]["memory"] == 0.25 * 2**30
