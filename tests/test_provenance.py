"""menagerie.provenance inside containers and clusters: the commit comes from the host (no git needed), the image
by its sha256, GPUs and their driver/CUDA/cuDNN/NCCL versions (None on CPU), the SLURM allocation; eval.json's
hardware is every stage's own, not the report job's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from menagerie import provenance
from menagerie.report import _per_stage

SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
    "SLURM_JOB_NUM_NODES",
    "SLURM_NNODES",
    "SLURM_JOB_PARTITION",
    "SLURM_CPUS_ON_NODE",
    "SLURM_GPUS_ON_NODE",
    "SLURM_JOB_GPUS",
    "SLURM_STEP_GPUS",
    "CUDA_VISIBLE_DEVICES",
    "APPTAINER_CONTAINER",
    "SINGULARITY_CONTAINER",
    "MENAGERIE_IMAGE",
)


@pytest.fixture
def clean_env(monkeypatch):
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_commit_comes_from_the_host_without_git(tmp_path):
    """A stage process with no git on PATH (as in the images) records the commit the host passed in."""
    code = "from menagerie.provenance import environment; print(environment()['git_commit'])"
    env = {**os.environ, "PATH": str(tmp_path), provenance.GIT_COMMIT_ENV: "0123abc-dirty"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0123abc-dirty"
    env.pop(provenance.GIT_COMMIT_ENV)  # without it and without git: "unknown", never a crash
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unknown"


def test_host_git_commit_marks_dirty_checkouts(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    clean = provenance.host_git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "f").write_text("2")
    assert provenance.host_git_commit(tmp_path) == clean + "-dirty"


def test_image_is_recorded_by_sha256_and_a_rebuild_changes_it(clean_env, tmp_path):
    assert provenance.image() is None and provenance.environment()["container"] is None
    sif = tmp_path / "train.sif"
    sif.write_bytes(b"FAKE-SIF first build")
    clean_env.setenv("APPTAINER_CONTAINER", str(sif))
    clean_env.setenv("MENAGERIE_IMAGE", "menagerie-train:0.1.0 git=abc uv.lock=def")
    first = provenance.image()
    assert first["path"] == str(sif) and first["label"].startswith("menagerie-train")
    assert first["sha256"] == provenance.sha256_file(sif)
    sif.write_bytes(b"FAKE-SIF second build, same path")
    os.utime(sif, ns=(1, 2))
    assert provenance.image()["sha256"] not in (None, first["sha256"])
    assert provenance.environment()["container"] == provenance.image()["sha256"]


def test_slurm_allocation(clean_env):
    assert provenance.slurm() is None
    for key, value in {
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_PARTITION": "gpu",
        "SLURM_GPUS_ON_NODE": "2",
        "SLURM_JOB_GPUS": "0,1",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }.items():
        clean_env.setenv(key, value)
    got = provenance.hardware()["slurm"]
    assert got["job_id"] == "42" and got["nodelist"] == "node[1-2]" and got["nodes"] == "2"
    assert (got["partition"], got["gpus_on_node"], got["gpu_ids"]) == ("gpu", "2", "0,1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answer")
def test_gpu_stack_on_cpu_is_empty_not_missing():
    stack = provenance.gpu_stack()
    assert stack == {"gpus": [], "cuda_driver": None, "nvidia_driver": None, "cuda": None, "cudnn": None, "nccl": None}
    assert set(stack) <= set(provenance.hardware())


def test_eval_json_hardware_is_every_stages_own(tmp_path):
    stages = {}
    for name, node, gpus in (
        ("sft", "gpu-node-7", ["NVIDIA H100 80GB HBM3"] * 2),
        ("evaluate.final", "gpu-node-3", ["NVIDIA A100-SXM4-80GB"]),
    ):
        stages[name] = {
            "stage": name,
            "environment": {
                "hardware": {"node": node, "gpus": gpus, "cuda": "13.0", "slurm": {"job_id": node[-1]}},
                "image": {"path": "containers/x.sif", "sha256": node[-1] * 64, "label": None},
                "git_commit": "c0ffee",
            },
        }
    stages["data.sft"] = {"sha256": {}}  # a data report: no environment
    hardware = _per_stage(stages, "hardware")
    assert set(hardware) == {"sft", "evaluate.final"}
    assert (
        hardware["sft"]["gpus"] == ["NVIDIA H100 80GB HBM3"] * 2 and hardware["evaluate.final"]["node"] == "gpu-node-3"
    )
    assert _per_stage(stages, "image")["sft"]["sha256"] == "7" * 64
    json.dumps(hardware)
