"""Each stage declares its resources in its own config (``resources``) and they reach Ray: a stage's actors
ask for the GPUs and custom resources it declares (on a local Ray that advertises one GPU; no CUDA is needed
to schedule on it), and a stage asking for what the cluster lacks fails naming the stage and the resource."""

from __future__ import annotations

import os

import pytest

from infra import raydata
from infra.config import ConfigError, declared_resources, load_config
from infra.raydata import ResourceError, StageResources, flat_map_rows, local_device
from tasks.train.lib.launch import worker_resources

# What the GPU profiles put on GPUs: TransNetV2 in full mode, the scorers, the captioner, the latent encoder,
# the regenerations of the pairs, the reward model, DPO sampling and the training workers.
WAN_GPU_STAGES = {"stages.segment", "stages.score", "stages.caption", "stages.caption.fuse_resources", "train.latents",
                  "train", "post.pairs", "post.reward", "post.dpo"}


class EchoWorker:
    def __init__(self, tag: str):
        self.tag = tag

    def __call__(self, item: int) -> list[dict]:
        import ray

        return [{"item": item, "tag": self.tag, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 "resources": ray.get_runtime_context().get_assigned_resources()}]


def gpu_stages(profile: str) -> set[str]:
    return {path for path, res in declared_resources(load_config(profile)).items() if res.wants_gpu()}


def test_profiles_declare_which_stages_ask_for_gpus():
    tiny = declared_resources(load_config("tiny"))
    assert {"corpus", "stages.ingest", "stages.segment", "stages.clips", "stages.score", "stages.caption",
            "stages.balance", "train.latents", "train", "post.pairs", "post.reward", "post.dpo"} <= set(tiny)
    assert gpu_stages("tiny") == set()
    for profile in ("wan-1.3b", "wan-14b"):
        assert gpu_stages(profile) == WAN_GPU_STAGES, profile
        cfg = load_config(profile)
        assert cfg.stages.segment.transnet_mode == "full" and cfg.train.latents.resources.actors == 8
    # The cluster topology on this machine: Ray stages and training on the worker node's (scheduled) GPU;
    # reward and DPO run in the CPU-only driver's process.
    assert gpu_stages("cluster-local") == {"stages.segment", "stages.caption", "train.latents", "train", "post.pairs"}


def test_cluster_local_profile_points_at_the_topology():
    cfg = load_config("cluster-local")
    assert cfg.storage.run_root.startswith("s3://") and cfg.storage.s3_endpoint_url
    assert cfg.ray.address and cfg.tracking.mlflow_uri.startswith("http") and cfg.prefect.api_url.startswith("http")
    assert cfg.train.ray_train and cfg.train.max_failures > 0
    assert cfg.train.resolutions == load_config("tiny").train.resolutions  # the tiny models (extends: tiny)


def test_cluster_local_filters_with_the_tiny_models_thresholds():
    """Rules set per models profile (the tiny aesthetic head is random: off in tiny) follow `extends`."""
    from infra.config import models_profile
    from infra.config_datasets import DatasetsConfig, dataset_stage_config

    assert models_profile("cluster-local") == "tiny" and models_profile("wan-1.3b") == "wan-1.3b"
    spec = {s.name: s for s in DatasetsConfig().specs}["D_360p"]

    def rules(profile: str) -> dict[str, float]:
        view = dataset_stage_config(spec, DatasetsConfig(), profile).profile
        return {r.name: r.threshold(profile) for r in view.rules if profile not in r.off_in}

    assert rules(models_profile("cluster-local")) == rules("tiny")
    assert "aesthetic" in rules("wan-1.3b") and "aesthetic" not in rules("tiny")


def test_old_and_bad_resource_keys_are_refused():
    with pytest.raises(ConfigError, match="ray.stages.*each stage declares"):
        load_config("tiny", ["ray.stages.segment.num_gpus=1"])
    with pytest.raises(ConfigError, match="stages.score.resources.num_gpus"):
        load_config("tiny", ["stages.score.resources.num_gpus=-1"])
    with pytest.raises(ConfigError, match="stages.captions"):  # a stage name that does not exist
        load_config("tiny", ["stages.captions.resources.num_gpus=1"])
    with pytest.raises(ConfigError, match="train.latents.num_gpus_per_actor"):
        load_config("tiny", ["train.latents.num_gpus_per_actor=1"])


def test_training_workers_take_the_declared_resources():
    cfg = load_config("tiny", ["train.resources.num_gpus=2", "train.resources.num_cpus=3",
                               "train.resources.custom={worker_node: 1}"]).train
    assert worker_resources(cfg) == {"CPU": 3.0, "GPU": 2.0, "worker_node": 1.0}  # no cluster asked
    assert worker_resources(load_config("tiny", ["train.resources.num_gpus=0"]).train) == {"CPU": 1.0}


def test_in_process_stage_declaring_a_gpu_it_cannot_see_fails_clearly():
    import torch

    assert local_device("reward", StageResources()) == "cpu"
    if torch.cuda.device_count() >= 1:
        pytest.skip("this machine has a GPU")
    with pytest.raises(ResourceError, match="stage dpo-1: declares num_gpus=1"):
        local_device("dpo-1", StageResources(num_gpus=1))


def test_stage_actors_get_the_declared_resources_and_missing_ones_fail_fast(monkeypatch):
    import shutil
    import tempfile

    import ray
    import test_cluster_resources
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(test_cluster_resources)
    monkeypatch.setattr(raydata, "RESOURCE_WAIT_S", 0.0)  # no node is coming back here
    temp = tempfile.mkdtemp(prefix="rf-")  # short: Ray's socket paths must fit in 107 bytes
    if ray.is_initialized():  # an earlier test's in-process Ray (the pipeline's) must not answer for this one
        ray.shutdown()
    ray.init(num_cpus=1, num_gpus=1, resources={"worker_node": 1}, include_dashboard=False, _temp_dir=temp,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        declared = StageResources(actors=1, num_cpus=0.5, num_gpus=1, memory_gb=0.25, custom={"worker_node": 1})
        rows = flat_map_rows([1, 2], EchoWorker, {"tag": "x"}, declared, stage="latents")
        with pytest.raises(ResourceError, match=r"stage caption: each actor asks for big_node=1 but the Ray cluster has 0"):
            flat_map_rows([1], EchoWorker, {"tag": "y"}, StageResources(custom={"big_node": 1}), stage="caption")
        with pytest.raises(ResourceError, match=r"stage segment: each actor asks for GPU=2"):
            flat_map_rows([1], EchoWorker, {"tag": "y"}, StageResources(num_gpus=2), stage="segment")
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert sorted(r["item"] for r in rows) == [1, 2]
    for row in rows:
        assert row["tag"] == "x" and row["gpus"] == "0"
        assert row["resources"]["GPU"] == 1 and row["resources"]["worker_node"] == 1
        assert row["resources"]["CPU"] == 0.5 and row["resources"]["memory"] == 0.25 * 2**30


def test_resources_are_not_part_of_a_stage_resume_key():
    from infra.config import config_hash

    tiny, gpu = load_config("tiny"), load_config("tiny", ["stages.segment.resources.num_gpus=1",
                                                          "stages.segment.resources.actors=4"])
    assert config_hash(tiny.stages.segment) == config_hash(gpu.stages.segment)  # where it runs, not what it computes
    assert config_hash(tiny.stages.segment) != config_hash(load_config("tiny", ["stages.segment.merge=vote"]).stages.segment)
    pool = load_config("tiny", ["stages.caption.fuse_resources.num_gpus=1"])  # a stage's second pool, likewise
    assert config_hash(tiny.stages.caption) == config_hash(pool.stages.caption)
    assert config_hash(tiny.stages.caption) != config_hash(load_config("tiny", ["stages.caption.fuse.seed=3"]).stages.caption)
