"""Reruns you can trust, through real Snakemake runs of a reduced tiny twin in a scratch copy (up to its SFT stage):

- checkpoints belong to their settings: a learning-rate edit starts training at step 1 (the stale checkpoints are
  removed, the log says so) and gives other weights; a killed rebuild with unchanged settings resumes;
- `make run` after `kill -9` of the whole process group resumes from the checkpoint without manual steps, and a
  second `make run` meanwhile is refused with one sentence, also after an unrelated Snakemake run in the directory
  ended (Snakemake 9 then removes its lock folder).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workflow_copy import ROOT, SNAKEMAKE, copy_workflow

pytest.importorskip("trl")

OVERLAY = """
recipes:
  tiny-rr:
    extends: tiny-tulu2-dpo
    data:
      sft: {sources: [{dataset: tiny-sft, count: 48}], validation: 0}
      dpo: {sources: [{dataset: tiny-prefs, count: 16}], validation: 0}
    contamination: {methods: [ngram]}
    stages:
      # LoRA in place of the twin's full SFT: what is checked (which checkpoint a rerun may resume) does not depend on
      # the method, and a LoRA checkpoint is ~10 MB where a full one is 1.6 GB (weights + AdamW state), every 2 steps
      sft: {method: lora, lora: {r: 16, alpha: 32, dropout: 0.0, target_modules: all-linear}, max_steps: %(steps)d,
            save_steps: 2, learning_rate: %(lr)s, global_batch_size: 4, micro_batch_size: 4, max_seq_length: 64}
"""
TARGET = "results/tiny-rr/sft"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}


def project(tmp_path: Path, steps: int, lr: str = "1.0e-3") -> Path:
    work = copy_workflow(tmp_path / "project", share_downloads=True)
    write_overlay(work, steps, lr)
    return work


def write_overlay(work: Path, steps: int, lr: str) -> None:
    (work / "o.yaml").write_text(OVERLAY % {"steps": steps, "lr": lr})


def snakemake_cmd() -> list[str]:
    return [str(SNAKEMAKE), "--cores", "2", "--configfile", "o.yaml", "--config", "recipe=tiny-rr", "--", TARGET]


def build(work: Path) -> None:
    """A build as `make run` starts it (scripts/run.py): after a kill -9, Snakemake's own locks are left behind and
    the run entry clears them (no workflow process of the directory is alive); plain snakemake would refuse."""
    command = [
        sys.executable,
        "scripts/run.py",
        "--recipe",
        "tiny-rr",
        "--cores",
        "2",
        "--configfile",
        "o.yaml",
        "--",
        TARGET,
    ]
    run = subprocess.run(command, cwd=work, env=ENV, capture_output=True, text=True, timeout=2400)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((work / "logs").rglob("*.log")))
    assert run.returncode == 0, run.stderr[-3000:] + logs


def recorded(work: Path) -> str | None:
    from menagerie.train.checkpoints import recorded_hash

    return recorded_hash(work / "results/tiny-rr/.work/sft")


def wait_for_checkpoint(work: Path, process: subprocess.Popen, timeout: float = 900) -> Path:
    """The first complete checkpoint (trainer_state.json written) of a trajectory other than the one recorded now."""
    stage_work, deadline, before = work / "results/tiny-rr/.work/sft", time.time() + timeout, recorded(work)
    while True:
        done = sorted(stage_work.glob("checkpoint-*/trainer_state.json"))
        if done and recorded(work) not in (None, before):
            return done[0].parent
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.1)


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def trained(work: Path) -> dict:
    from safetensors.torch import load_file

    out = work / TARGET
    history = json.loads((out / "trainer_log.json").read_text())
    return {
        "provenance": json.loads((out / "provenance.json").read_text()),
        "steps": [e["step"] for e in history if "loss" in e],
        "lr": {e["step"]: float(e["learning_rate"]) for e in history if "learning_rate" in e},
        "weights": load_file(str(out / "adapter_model.safetensors")),
    }


def differ(a: dict, b: dict) -> bool:
    import torch

    return any(not torch.equal(a[name], b[name]) for name in a)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_an_edited_learning_rate_starts_at_step_1_and_an_unchanged_rebuild_resumes(tmp_path):
    work = project(tmp_path, steps=6)
    build(work)
    first = trained(work)
    assert first["steps"] == list(range(1, 7)) and first["provenance"]["resumed_from"] is None
    stage_work = work / "results/tiny-rr/.work/sft"
    assert sorted(p.name for p in stage_work.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]

    # the learning rate doubles: Snakemake reruns training, which must not "resume" from the old checkpoint-6
    write_overlay(work, steps=6, lr="2.0e-3")
    killed = subprocess.Popen(
        snakemake_cmd(), cwd=work, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = wait_for_checkpoint(work, killed)
    kill_group(killed)
    log = (work / "logs/tiny-rr/sft.log").read_text()
    stale = [line for line in log.splitlines() if "stale checkpoint" in line]
    assert len(stale) == 1 and "(checkpoint-4, checkpoint-6)" in stale[0] and "starts at step 1" in stale[0]
    assert checkpoint.name != "checkpoint-6" and not (work / TARGET).exists()

    # rebuilt with the same (edited) settings: resumes from the killed run's checkpoint and finishes
    build(work)
    second = trained(work)
    resumed = second["provenance"]["resumed_from"]
    assert resumed and Path(resumed).name.startswith("checkpoint-") and int(resumed.rsplit("-", 1)[1]) >= 2
    assert "resuming from" in (work / "logs/tiny-rr/sft.log").read_text()
    assert second["steps"] == list(range(1, 7))  # every step once, across both attempts
    # the whole history is the new schedule (twice the first run's rates), and the weights are others
    assert all(second["lr"][s] == pytest.approx(2 * first["lr"][s]) for s in first["lr"] if first["lr"][s])
    assert differ(first["weights"], second["weights"])


def make_run(work: Path) -> list[str]:
    return [
        "make",
        "--no-print-directory",
        "-o",
        ".venv/.synced",
        "-o",
        "env",
        "run",
        "RECIPE=tiny-rr",
        "CONFIG=o.yaml",
        "CORES=2",
        f"SNAKEMAKE_ARGS={TARGET}",
    ]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_make_run_after_kill_9_resumes_and_a_second_run_is_refused(tmp_path):
    work = project(tmp_path, steps=14)
    for name in ("Makefile",):
        (work / name).write_text((ROOT / name).read_text())
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the environment running this test
    first = subprocess.Popen(
        make_run(work), cwd=work, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_checkpoint(work, first)
        refused = subprocess.run(make_run(work), cwd=work, env=ENV, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "another build is running in" in errors[0], refused.stderr
        assert first.poll() is None  # the refused run left the first alone
    finally:
        kill_group(first)
    assert list((work / ".snakemake/locks").iterdir()), "kill -9 should leave Snakemake's lock behind"

    again = subprocess.Popen(
        make_run(work),
        cwd=work,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while (
            not list((work / ".snakemake/locks").glob("*"))
            or not (work / "logs/tiny-rr/sft.log").exists()
            or "resuming from" not in (work / "logs/tiny-rr/sft.log").read_text()
        ):
            assert again.poll() is None, again.stdout.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        # an unrelated Snakemake run in the same directory ends (and with it Snakemake's lock folder) ...
        unrelated = subprocess.run(
            [str(SNAKEMAKE), "--cores", "1", "resources/datasets/tiny-units-sft.jsonl"],
            cwd=work,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert unrelated.returncode == 0, unrelated.stderr[-2000:]
        # ... and a second build is still refused while the resumed one runs
        assert again.poll() is None, "the resumed run ended before the concurrency check; give it more steps"
        refused = subprocess.run(make_run(work), cwd=work, env=ENV, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "another build is running in" in refused.stderr
        output, _ = again.communicate(timeout=2400)
    finally:
        if again.poll() is None:
            kill_group(again)
    assert again.returncode == 0, output[-3000:]
    assert "removed Snakemake's stale lock" in output
    result = trained(work)
    resumed = result["provenance"]["resumed_from"]
    assert resumed and int(resumed.rsplit("-", 1)[1]) >= 2
    assert result["steps"] == list(range(1, 15))
