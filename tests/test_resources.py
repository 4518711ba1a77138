"""menagerie.resources: a stage's `resources:` -> Snakemake resources -> the sbatch and srun lines that
snakemake-executor-plugin-slurm (and its jobstep plugin) build from them, with the plugins' own code. The multi-node
shape is checked here only (no 2-node cluster; tests/test_slurm.py runs the single-node 2-GPU job for real)."""

from __future__ import annotations

import re

import pytest
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting, get_gpu_setting, get_node_setting

from menagerie.errors import ConfigError
from menagerie.resources import GPU_PARTITION_ENV, CPU_PARTITION_ENV, job_threads, slurm_resources


class Resources(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class Job:
    def __init__(self, resources: dict, threads: int):
        self.resources, self.threads = Resources(resources), threads


def stage(**kw):
    return {"nodes": 1, "gpus": 0, "gpu_model": None, "cpus_per_gpu": 8, "mem_gb": 8, "runtime_min": 60, **kw}


def lines(block: dict, cores: int = 8, attempt: int = 1, env: dict | None = None) -> tuple[str, str]:
    """(sbatch line, the job step's srun prefix) as the plugins write them for a job of this stage."""
    job = Job(slurm_resources(block, attempt, env=env or {}), job_threads(block, cores))
    partition = f"-p {job.resources['slurm_partition']}" if job.resources["slurm_partition"] else ""
    params = {
        "run_uuid": "uuid",
        "slurm_logfile": "log",
        "comment_str": "rule_x",
        "account": "-A acct",
        "partition": partition,
        "workdir": "/w",
    }
    sbatch = get_submit_command(job, params) + set_gres_string(job)
    # inside the allocation the jobstep plugin reads SLURM_GPUS (set by --gpus only) to pick --cpus-per-gpu
    srun = f"srun -n1 {get_cpu_setting(job, None)} {get_gpu_setting(job)} {get_node_setting(job)}"
    return sbatch, " ".join(srun.split())


def test_two_gpu_stage_is_one_task_with_both_gpus():
    sbatch, srun = lines(stage(gpus=2, gpu_model="fake", cpus_per_gpu=3, mem_gb=0.5, runtime_min=5))
    assert "--gres=gpu:fake:2" in sbatch and "--cpus-per-gpu=3" in sbatch and "--nodes=1" in sbatch
    assert "--ntasks-per-node=1" in sbatch
    # what split jobs per GPU (plugin issue #459) or double-booked GPUs / CPUs is absent
    assert "--ntasks-per-gpu" not in sbatch and not re.search(r"--gpus[= ]", sbatch)
    assert "--cpus-per-task" not in sbatch and "--ntasks=" not in sbatch
    assert "--mem 512" in sbatch and "-t 5" in sbatch
    # the job step runs the rule once, with the CPUs the node got (2 x 3), no second GPU request
    assert srun == "srun -n1 --cpus-per-task=6 --nodes=1"


def test_multi_node_stage_asks_gpus_per_node():
    sbatch, srun = lines(
        stage(nodes=2, gpus=8, gpu_model="a100", cpus_per_gpu=12, mem_gb=900, runtime_min=1440), cores=64
    )
    assert "--nodes=2" in sbatch and "--ntasks-per-node=1" in sbatch
    assert "--gres=gpu:a100:8" in sbatch  # --gres counts per node; --gpus=16 would not say 8 + 8
    assert "--cpus-per-gpu=12" in sbatch and "--mem 921600" in sbatch
    assert "--ntasks-per-gpu" not in sbatch and not re.search(r"--gpus[= ]", sbatch)
    # the rule's shell command starts once (on the first node, `-n1`); its launcher spreads over both nodes
    assert srun == "srun -n1 --cpus-per-task=64 --nodes=2"


def test_untyped_gpus_and_cpu_stage():
    sbatch, _ = lines(stage(gpus=1, cpus_per_gpu=4))
    assert "--gres=gpu:1" in sbatch and "--cpus-per-gpu=4" in sbatch
    sbatch, srun = lines(stage(), cores=8)
    assert "--ntasks=1" in sbatch and "--cpus-per-task=8" in sbatch and "--nodes=1" in sbatch
    assert "gpu" not in sbatch and "--ntasks-per-node" not in sbatch
    assert srun == "srun -n1 --cpus-per-task=8 --nodes=1"


def test_memory_and_runtime_grow_with_the_attempt():
    first, _ = lines(stage(mem_gb=2, runtime_min=30))
    third, _ = lines(stage(mem_gb=2, runtime_min=30), attempt=3)
    assert "--mem 2048" in first and "-t 30" in first
    assert "--mem 6144" in third and "-t 90" in third


def test_gpu_job_retry_grows_runtime_not_the_nodes_memory():
    # a whole-node GPU job (960 GB) killed at its time limit resumes from its checkpoint on the retry: asking
    # 1,920 / 2,880 GB of a 960 GB node could never be scheduled
    node = stage(nodes=2, gpus=8, gpu_model="h100", cpus_per_gpu=12, mem_gb=960, runtime_min=600)
    for attempt, minutes in ((1, 600), (2, 1200), (3, 1800)):
        sbatch, _ = lines(node, cores=96, attempt=attempt)
        assert "--mem 983040" in sbatch and f"-t {minutes}" in sbatch, (attempt, sbatch)


def test_runtime_never_exceeds_the_per_job_limit():
    from menagerie.resources import MAX_RUNTIME_ENV, jobs_needed, max_job_runtime

    qlora70 = stage(gpus=8, gpu_model="h100", mem_gb=960, runtime_min=27420)  # tulu2-qlora-70b: 19 days
    assert "-t 2880" in lines(qlora70)[0]  # default per-job limit: 48 h
    assert "-t 4320" in lines(qlora70, env={MAX_RUNTIME_ENV: "4320"})[0]
    assert "-t 90" in lines(stage(runtime_min=30), attempt=3, env={MAX_RUNTIME_ENV: "4320"})[0]
    assert jobs_needed(27420, {}) == 10 and jobs_needed(60, {}) == 1 and max_job_runtime({}) == 2880
    with pytest.raises(ConfigError, match=r"MENAGERIE_SLURM_MAX_RUNTIME_MIN='2d': expected"):
        max_job_runtime({MAX_RUNTIME_ENV: "2d"})


def test_gpu_and_cpu_partitions_are_separate():
    env = {CPU_PARTITION_ENV: "cpu", GPU_PARTITION_ENV: "gpu"}
    assert "-p gpu" in lines(stage(gpus=1), env=env)[0]
    assert "-p cpu" in lines(stage(), env=env)[0]
    assert "-p cpu" in lines(stage(gpus=1), env={CPU_PARTITION_ENV: "cpu"})[0]  # GPU falls back to the CPU one
    assert " -p " not in lines(stage(gpus=1), env={})[0]


def test_bad_resources_are_one_sentence():
    with pytest.raises(ConfigError, match=r"recipes.x.eval.resources.gpu_model: 'a100-80gb' is not a SLURM GRES"):
        slurm_resources(stage(gpus=1, gpu_model="a100-80gb"), where="recipes.x.eval.resources")
    with pytest.raises(ConfigError, match=r"nodes: 2 nodes for a stage without GPUs"):
        slurm_resources(stage(nodes=2))
