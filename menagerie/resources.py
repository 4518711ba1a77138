"""How a stage's `resources:` (config.yaml) become a SLURM job, in the Snakemake resources that
snakemake-executor-plugin-slurm 2.6 reads. Rules call these through menagerie/jobs.py; tests/test_resources.py builds
the plugin's own sbatch and srun lines from them.

A GPU stage is ONE job with one task per node holding all of that node's GPUs (`--ntasks-per-node=1`
`--gres=gpu[:<model>]:<gpus>` `--cpus-per-gpu=<n>` `--nodes=<nodes>`): the stage's launcher (torchrun, vLLM's tensor
parallel workers) starts the per-GPU processes itself. The plugin's defaults would split it instead: for a job with a
`gpu` resource it adds `--ntasks-per-gpu=1` (so `gpu=2` ran the command twice, one GPU each; plugin issue #459) and
`--gpus=N` counts GPUs per job, not per node. Hence:

* `gres` (per node) carries the GPU count and model; no `gpu`/`gpu_model` keys, which would add a second `--gpus`;
* `tasks_per_gpu=0` drops `--ntasks-per-gpu`; `slurm_extra="--ntasks-per-node=1"` states the task layout;
* `cpus_per_gpu` always with the GPUs (`--cpus-per-gpu`), never with `cpus_per_task` (the plugin's
  `SLURM_TRES_PER_TASK ... mutually exclusive` failures, issues #342/#373);
* the rule's threads are the CPUs one node gets (gpus x cpus_per_gpu): the plugin's job step runs the rule with
  `srun -n1 --cpus-per-task=<threads>` inside the allocation, which must fit; the step inherits all the job's GRES
  (checked on the test cluster: CUDA_VISIBLE_DEVICES=0,1 for `gpu:fake:2`).

CPU stages get the same keys with neutral values (a resource a rule declares must exist for all its jobs).
Partitions: GPU jobs go to MENAGERIE_SLURM_GPU_PARTITION, CPU jobs to MENAGERIE_SLURM_PARTITION (profiles/slurm*;
unset: the cluster's default partition); the GPU one falls back to the CPU one.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

from menagerie.errors import ConfigError

SLURM_KEYS = ("nodes", "gres", "tasks_per_gpu", "cpus_per_gpu", "slurm_extra", "slurm_partition", "mem_mb", "runtime")
GPU_PARTITION_ENV = "MENAGERIE_SLURM_GPU_PARTITION"
CPU_PARTITION_ENV = "MENAGERIE_SLURM_PARTITION"
MAX_RUNTIME_ENV = "MENAGERIE_SLURM_MAX_RUNTIME_MIN"
DEFAULT_MAX_RUNTIME_MIN = 2880  # 48 h: a common MaxTime of GPU partitions; a longer stage is a chain of jobs
_GPU_MODEL = re.compile(r"^[A-Za-z0-9_.]+$")  # what the plugin accepts in a GRES type


def partition(gpus: int, env: Mapping[str, str] | None = None) -> str:
    """The partition of a job with `gpus` GPUs per node ("" = the cluster's default)."""
    env = os.environ if env is None else env
    cpu = env.get(CPU_PARTITION_ENV, "")
    return (env.get(GPU_PARTITION_ENV) or cpu) if gpus else cpu


def max_job_runtime(env: Mapping[str, str] | None = None) -> int:
    """The longest time limit one SLURM job may ask (MENAGERIE_SLURM_MAX_RUNTIME_MIN, the partition's MaxTime;
    unset: 48 h). A stage declared longer runs as a chain of jobs, each resuming from the last checkpoint."""
    env = os.environ if env is None else env
    raw = env.get(MAX_RUNTIME_ENV) or ""
    try:
        value = int(raw) if raw else DEFAULT_MAX_RUNTIME_MIN
    except ValueError:
        raise ConfigError(
            f"{MAX_RUNTIME_ENV}={raw!r}: expected the partition's maximum time limit in whole minutes"
        ) from None
    if value < 1:
        raise ConfigError(f"{MAX_RUNTIME_ENV}={raw!r}: expected a positive number of minutes")
    return value


def jobs_needed(runtime_min: int, env: Mapping[str, str] | None = None) -> int:
    """How many SLURM jobs (first submission + retries / reruns, each resuming from the last checkpoint) a stage of
    `runtime_min` minutes takes under the per-job time limit."""
    return max(1, math.ceil(int(runtime_min) / max_job_runtime(env)))


def slurm_resources(
    resources: Mapping, attempt: int = 1, env: Mapping[str, str] | None = None, where: str = "resources"
) -> dict:
    """Snakemake resources of one job from a stage's `resources:` block, for retry `attempt` (profiles/slurm sets
    `retries`). Runtime grows with the attempt (2x, then 3x), never beyond the per-job limit (max_job_runtime): a
    job killed at its time limit resumes from its checkpoint. A GPU job's memory is the node's declared `mem_gb`
    on every attempt (a whole-node job asking 2x its node's memory could never be scheduled); a CPU job's memory
    grows with the attempt like its runtime (a job killed for OOM gets 2x, then 3x)."""
    gpus, nodes = int(resources["gpus"]), int(resources.get("nodes") or 1)
    model = resources.get("gpu_model") or ""
    if model and not _GPU_MODEL.match(model):
        raise ConfigError(f"{where}.gpu_model: {model!r} is not a SLURM GRES type (letters, digits, '_' and '.')")
    if nodes > 1 and not gpus:
        raise ConfigError(
            f"{where}.nodes: {nodes} nodes for a stage without GPUs (gpus: 0); multi-node jobs are "
            "for multi-GPU training"
        )
    mem_mb = int(resources["mem_gb"] * 1024)
    out = {
        "nodes": nodes,
        "mem_mb": mem_mb if gpus else mem_mb * attempt,
        "runtime": min(int(resources["runtime_min"]) * attempt, max_job_runtime(env)),
        "slurm_partition": partition(gpus, env),
        "tasks_per_gpu": 0,
    }
    if gpus:
        out.update(
            gres=f"gpu:{model}:{gpus}" if model else f"gpu:{gpus}",
            cpus_per_gpu=int(resources["cpus_per_gpu"]),
            slurm_extra="--ntasks-per-node=1",
        )
    else:
        out.update(gres="", cpus_per_gpu=0, slurm_extra="")
    return out


def job_threads(resources: Mapping, cores: int) -> int:
    """Threads of a stage's job: the CPUs one node of a GPU job gets, else the workflow's cores (Snakemake caps
    threads at --cores in any case; so does this)."""
    gpus = int(resources["gpus"])
    return min(gpus * int(resources["cpus_per_gpu"]), cores) if gpus else cores
