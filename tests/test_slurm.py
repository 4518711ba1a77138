"""profiles/slurm against a real scheduler: a single-node SLURM cluster with accounting and two fake GPUs
(menagerie.hpc.cluster), brought up under tmp_path and torn down at the end.

One Snakemake run through `--profile profiles/slurm` builds the tiny twin's cheap stages (a generated dataset and an
SFT mixture), a GPU stage whose resources come from the recipe via rules/common.smk's `resource_getter` (an overlay
recipe asks `gpus: 1, gpu_model: fake` for SFT), and a job that always fails. sacct then shows each stage as its own
job with the requested resources, and the failing job submitted 1 + `retries` times with memory and time growing per
attempt. Needs root and the packages slurm-wlm, slurmdbd, munge, mariadb-server (.ci/run installs them): absent, the
test skips locally and fails in CI (CI=true).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from menagerie.hpc.cluster import APT_PACKAGES, SlurmCluster, missing_packages

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(360)]

REPO = Path(__file__).resolve().parents[1]
RECIPE = "slurm-test"
SNAKEFILE = f"""
include: "{REPO}/Snakefile"


rule gpu_probe:
    output:
        "probe/{{recipe}}.gpu.txt",
    resources:
        gpu=resource_getter("sft", "gpu"),
        gpu_model=resource_getter("sft", "gpu_model"),
        cpus_per_gpu=resource_getter("sft", "cpus_per_gpu"),
        mem_mb=resource_getter("sft", "mem_mb"),
        runtime=resource_getter("sft", "runtime"),
    shell:
        "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES > {{output}}"


rule always_fails:
    output:
        "probe/fails.txt",
    resources:
        mem_mb=lambda w, attempt: 100 * attempt,
    shell:
        "echo injected failure >&2; exit 3"
"""
OVERLAY = {"recipe": RECIPE, "recipes": {RECIPE: {
    "extends": "tiny-tulu2-dpo",
    "data": {"sft": {"sources": [{"dataset": "tiny-units-sft", "count": 200}], "validation": 16}},
    "stages": {"sft": {"resources": {"gpus": 1, "gpu_model": "fake", "cpus_per_gpu": 1, "mem_gb": 0.5,
                                     "runtime_min": 5}}}}}}
TARGETS = {"dataset": "resources/datasets/tiny-eval.jsonl", "mixture": f"results/{RECIPE}/data/sft.jsonl",
           "gpu_probe": f"probe/{RECIPE}.gpu.txt", "always_fails": "probe/fails.txt"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_packages()
    if missing or os.geteuid() != 0:
        why = f"missing packages {missing}" if missing else "not root"
        message = f"SLURM test cluster unavailable ({why}); install: apt-get install -y {' '.join(APT_PACKAGES)}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tmp_path_factory.mktemp("slurm", numbered=True))
    started = time.monotonic()
    c = SlurmCluster(root / "cluster").start(timeout=60)
    c.startup_s = time.monotonic() - started
    yield c
    c.stop()
    assert c.leftover_processes() == [], "daemons left behind"


def sacct_rows(cluster: SlurmCluster) -> list[dict]:
    fields = ["JobID", "JobName", "State", "ExitCode", "AllocTRES", "ReqMem", "Timelimit", "Comment"]
    out = cluster.run("sacct", "-a", "-X", "-n", "-P", "-S", "now-1hour", "-o", ",".join(fields)).stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]


def test_profile_runs_stages_as_slurm_jobs(cluster, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    (work / "overlay.yaml").write_text(yaml.safe_dump(OVERLAY))
    for name in ("config.yaml", "scripts", "tasks"):
        (work / name).symlink_to(REPO / name)
    env = {**cluster.env, "MENAGERIE_SLURM_ACCOUNT": cluster.account, "MENAGERIE_SLURM_PARTITION": cluster.partition,
           "HF_HUB_OFFLINE": "1", "HF_HOME": os.environ.get("HF_HOME", str(REPO / ".cache/hf")),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "snakemake", "--profile", str(REPO / "profiles/slurm"),
               "--workflow-profile", str(REPO / "profiles/default"), "--slurm-init-seconds-before-status-checks", "1",
               "--retries", "1", "--configfile", "overlay.yaml", "--jobs", "8", *TARGETS.values()]
    started = time.monotonic()
    run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=270)
    elapsed = time.monotonic() - started
    log = run.stdout + run.stderr
    print(f"cluster up in {cluster.startup_s:.1f} s; snakemake ran {elapsed:.1f} s")

    # the injected failure is reported (non-zero exit naming the rule), the other targets are built
    assert run.returncode != 0, log
    assert "always_fails" in log and "Error" in log, log
    for rule, target in TARGETS.items():
        assert (work / target).exists() == (rule != "always_fails"), f"{rule}: {target}\n{log[-3000:]}"
    assert (work / TARGETS["gpu_probe"]).read_text().strip() in ("CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1")

    rows = sacct_rows(cluster)
    summary = "\n".join("|".join(r.values()) for r in rows)
    # every stage ran as its own job (dataset: tiny-eval, tiny-units-sft)
    datasets = [r for r in rows if r["Comment"].startswith("rule_dataset")]
    mixtures = [r for r in rows if r["Comment"].startswith("rule_mixture")]
    gpu_jobs = [r for r in rows if r["Comment"].startswith("rule_gpu_probe")]
    failing = [r for r in rows if r["Comment"].startswith("rule_always_fails")]
    assert len(datasets) == 2 and len(mixtures) == 1 and len(gpu_jobs) == 1, summary
    for row in datasets + mixtures + gpu_jobs:
        assert row["State"] == "COMPLETED", summary
    for row in datasets + mixtures:
        assert "gres/gpu" not in row["AllocTRES"], summary
    # the GPU stage got one (typed) GPU and the recipe's memory (0.5 GB) and runtime (5 min)
    gpu = gpu_jobs[0]
    assert "gres/gpu=1" in gpu["AllocTRES"] and f"gres/gpu:fake=1" in gpu["AllocTRES"], summary
    assert gpu["ReqMem"] == "512M" and gpu["Timelimit"] == "00:05:00", summary
    # the failing job: 1 + retries submissions, memory scaled per attempt
    assert [r["State"] for r in failing] == ["FAILED"] * 2, summary
    assert [r["ReqMem"] for r in failing] == ["100M", "200M"], summary
    assert [r["Timelimit"] for r in failing] == ["00:30:00", "01:00:00"], summary
    assert all(r["ExitCode"] != "0:0" for r in failing), summary
