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
    assert "python=3.11" in env["dependencies"] and any(p.startswith("torch==") for p in pins)
    assert all("==" in p for p in pins)


@pytest.mark.skipif(find_uv() is None, reason="uv not available (make env)")
@pytest.mark.parametrize("stage", STAGES)
def test_env_file_matches_lock(stage):
    assert (REPO / f"envs/{stage}.yaml").read_text() == conda_env(stage), "stale: run `make envs`"
