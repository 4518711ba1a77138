"""The run budget (menagerie.train.budget): a ledger over every stage and retry, rank 0's decision on every rank, SLURM
time limits capped by what is left. The 2-rank run is real: torchrun (gloo, CPU) of scripts/train.py on a tiny Llama."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from menagerie.train.budget import append_ledger, attempts, read_ledger, run_usage, cap_runtime

REPO = Path(__file__).resolve().parents[1]


def recipe(**budget) -> dict:
    return {
        "budget": {"gpu_hours": None, "wall_hours": None, "gpus": None, "gpu_model": None, **budget},
        "stages": {"sft": {"resources": {"gpus": 2}}},
        "eval": {"resources": {"gpus": 1}},
    }


def plant(
    recipe_dir: Path,
    attempt: str,
    stage: str,
    gpus: int,
    hours: float,
    end: bool = True,
    trajectory: str | None = None,
    ago_h: float = 0.0,
    stopped: bool = False,
) -> None:
    start = time.time() - (hours + ago_h) * 3600 - 60
    line = {"attempt": attempt, "stage": stage, "gpus": gpus, **({"trajectory": trajectory} if trajectory else {})}
    append_ledger(recipe_dir, {**line, "event": "start", "at": start})
    append_ledger(
        recipe_dir,
        {
            **line,
            "event": "end" if end else "beat",
            "at": start + hours * 3600,
            **({"stopped_for_budget": True} if stopped else {}),
        },
    )


def test_ledger_counts_killed_attempts_and_other_stages(tmp_path):
    plant(tmp_path, "sft-a", "sft", 2, 1.0, end=False)  # killed by its time limit after its last beat
    plant(tmp_path, "sft-b", "sft", 2, 0.5)  # the retry
    (tmp_path / "eval/final").mkdir(parents=True)
    (tmp_path / "eval/final/metrics.provenance.json").write_text(
        json.dumps({"wall_time_s": 1800, "environment": {"hardware": {"gpus": ["NVIDIA H100"]}}})
    )
    with open(tmp_path / "budget/ledger.jsonl", "a") as handle:
        handle.write('{"attempt": "sft-c", "stage"')  # a line cut by a kill mid-write is ignored
    usage = run_usage(tmp_path, recipe(gpu_hours=3.0, wall_hours=2.5))
    assert usage["stages"]["sft"]["attempts"] == 2
    assert usage["gpu_hours"] == pytest.approx(1.5 * 2 + 0.5 * 1)
    assert usage["wall_hours"] == pytest.approx(2.0)
    assert usage["held"] is False and usage["overruns"] == ["3.500 GPU-hours used, the budget allows 3.0"]
    assert sorted(a["ended"] for a in attempts(read_ledger(tmp_path)).values()) == [False, True]


def test_slurm_time_limit_never_grows_beyond_what_is_left(tmp_path):
    plant(tmp_path, "sft-a", "sft", 2, 1.0)
    r = recipe(gpu_hours=4.0, wall_hours=10.0)  # 2 GPU-hours left: 60 minutes on 2 GPUs
    assert cap_runtime(30, 30, tmp_path, r, "sft", gpus=2) == 30
    assert cap_runtime(90, 30, tmp_path, r, "sft", gpus=2) == 60  # the 3rd attempt (3 x 30) would ask 90
    assert cap_runtime(90, 75, tmp_path, r, "sft", gpus=2) == 75  # never below the recipe's own runtime
    assert cap_runtime(90, 30, tmp_path, recipe(), "sft", gpus=2) == 90  # no budget: grows with the attempt
    assert cap_runtime(90, 30, tmp_path, recipe(gpu_hours=4.0, counts=["sft"]), "eval", gpus=2) == 90  # not counted
    plant(tmp_path, "sft-b", "sft", 2, 2.0)
    assert cap_runtime(30, 30, tmp_path, r, "sft", gpus=2) == 1  # spent: fails fast instead of running on


def test_budget_counts_only_the_stages_it_names(tmp_path):
    plant(tmp_path, "sft-a", "sft", 1, 2.0)
    (tmp_path / "eval/final").mkdir(parents=True)
    (tmp_path / "eval/final/metrics.provenance.json").write_text(
        json.dumps({"wall_time_s": 36000, "environment": {"hardware": {"gpus": ["NVIDIA GeForce RTX 4090"]}}})
    )
    usage = run_usage(tmp_path, recipe(gpu_hours=3.0, counts=["sft"]))
    assert usage["held"] is True and usage["gpu_hours"] == pytest.approx(2.0)
    assert usage["stages"]["eval.final"]["counted"] is False
    assert run_usage(tmp_path, recipe(gpu_hours=3.0))["held"] is False  # counting every stage: 12 GPU-hours


def test_a_cut_budget_file_in_a_checkpoint_does_not_stop_every_resume(tmp_path, capsys):
    """Trainer marks a checkpoint complete (trainer_state.json) before the budget callback writes its file; one cut
    by a kill there made every resume from that checkpoint fail with a JSONDecodeError."""
    from menagerie.train.budget import BUDGET_FILE, budget_callback

    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / BUDGET_FILE).write_text('{"used_gpu_ho')
    callback = budget_callback(2.0, 1, checkpoint)
    assert callback.used_gpu_hours() < 0.01
    assert f"note: {checkpoint / BUDGET_FILE} is unreadable" in capsys.readouterr().out


def test_stage_budget_counts_only_attempts_on_the_same_trajectory(tmp_path):
    """After a settings edit training restarts at step 1 (new trajectory): the old settings' 3 GPU-hours must not
    stop it at once; the recipe-level budget still counts every attempt since the run's start."""
    from menagerie.train.budget import budget_callback

    plant(tmp_path, "sft-old", "sft", 1, 3.0, trajectory="aaaa", ago_h=10, stopped=True)  # other settings
    plant(tmp_path, "sft-done", "sft", 1, 1.5, trajectory="bbbb", ago_h=5)  # an earlier finished build
    plant(tmp_path, "sft-b1", "sft", 1, 0.5, end=False, trajectory="bbbb")  # killed: same steps resume
    r = recipe(gpu_hours=100.0)
    fresh = budget_callback(2.0, 1, None, recipe_dir=tmp_path, recipe=r, stage="sft", trajectory="cccc")
    assert fresh.previous_gpu_hours == 0.0 and fresh.spent() is None
    resumed = budget_callback(2.0, 1, None, recipe_dir=tmp_path, recipe=r, stage="sft", trajectory="bbbb")
    assert resumed.previous_gpu_hours == pytest.approx(0.5, abs=0.01)  # not the finished build's 1.5
    again = budget_callback(2.0, 1, None, recipe_dir=tmp_path, recipe=r, stage="sft", trajectory="aaaa")
    assert again.previous_gpu_hours == pytest.approx(3.0, abs=0.01) and again.spent().startswith("stage budget")
    assert fresh.run_before["gpu_hours"] == pytest.approx(5.0, abs=0.01)  # the run budget counts them all
    lines = [e for e in read_ledger(tmp_path) if e["attempt"] == fresh.attempt]
    assert [(e["event"], e["trajectory"]) for e in lines] == [("start", "cccc")]  # the ledger records it


@pytest.mark.slow
def test_two_ranks_stop_together_when_rank_0_finds_the_budget_spent(tmp_path, tiny_model):
    """A planted earlier attempt already spent the run's wall budget: rank 0 decides at step 1, broadcasts, and both
    ranks leave at step 1 (a rank that kept training would hang the all-reduce; the timeout would catch it); the
    checkpoint is saved, the stage records the stop, the ledger holds the attempt."""
    from menagerie.train import launch
    from test_train_resume import PROBE, batches_by_step, probe_env, train_argv, write_setup

    setup = write_setup(
        tmp_path / "setup",
        max_steps=6,
        save_steps=100,
        method="lora",
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
    )
    config = json.loads(setup["config"].read_text())
    config["recipes"]["tiny-tulu2-dpo"]["budget"] = {
        "gpu_hours": None,
        "wall_hours": 0.01,
        "gpus": None,
        "gpu_model": None,
    }
    setup["config"].write_text(json.dumps(config))
    recipe_dir = tmp_path / "results" / "tiny-tulu2-dpo"
    plant(recipe_dir, "sft-earlier", "sft", 0, 0.02, end=False)  # 72 s of a killed attempt > 36 s allowed
    prefix = launch.command({"gpus": 0}, env={launch.NPROC_ENV: "2"})
    run = subprocess.run(
        [*prefix, str(PROBE), *train_argv(setup, tiny_model, recipe_dir / "sft", tmp_path / "work")],
        env=probe_env(tmp_path / "batches.jsonl"),
        timeout=600,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    steps = batches_by_step(tmp_path / "batches.jsonl")
    assert sorted(steps) == [1] and sorted(h.split(":")[0] for h in steps[1]) == ["0", "1"]
    assert (tmp_path / "work/checkpoint-1/trainer_state.json").is_file()
    record = json.loads((recipe_dir / "sft/provenance.json").read_text())
    assert record["stopped_for_budget"] is True and record["metrics"]["global_step"] == 1
    ours = [a for name, a in attempts(read_ledger(recipe_dir)).items() if name != "sft-earlier"]
    assert len(ours) == 1 and ours[0]["ended"] and ours[0]["stopped_for_budget"]  # rank 0 alone writes the ledger
    assert run_usage(recipe_dir, config["recipes"]["tiny-tulu2-dpo"])["held"] is False
    # the progress line (menagerie.train.progress): rank 0 alone, at the first logged step (here also the last)
    lines = [line for line in run.stdout.splitlines() if line.startswith("progress sft: ")]
    assert len(lines) == 1 and lines[0].startswith("progress sft: step 1/6 (17%) loss "), lines
    assert " tokens/s | elapsed " in lines[0] and " | ETA " in lines[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, make_tiny_tokenizer) -> Path:
    from tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", make_tiny_tokenizer(add_bos=True))
