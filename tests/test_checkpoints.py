"""Checkpoints bound to the settings that made them, and their cadence (menagerie/train/checkpoints.py).

The through-Snakemake behaviour (an edited learning rate starts at step 1; an unchanged rebuild resumes) is in
tests/e2e/test_reruns.py; these are the unit-level rules it relies on."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from menagerie.train import checkpoints

STAGE = {
    "learning_rate": 1e-3,
    "max_steps": 40,
    "seed": 42,
    "save_steps": None,
    "save_minutes": 30,
    "budget_gpu_hours": None,
    "resources": {"gpus": 0},
    "eval_steps": None,
}
BATCH = {"global_batch_size": 8, "micro_batch_size": 8, "processes": 1, "gradient_accumulation_steps": 1}
INPUTS = {"model": "aa", "train": "bb"}


def fingerprint(**stage) -> dict:
    return checkpoints.trajectory({**STAGE, **stage}, "tulu", BATCH, INPUTS)


def make_checkpoint(work, step: int, complete: bool = True):
    path = work / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_last_checkpoint_skips_a_checkpoint_cut_off_mid_save(tmp_path):
    assert checkpoints.last_checkpoint(tmp_path / "missing") is None
    for step, complete in ((2, True), (4, True), (6, False)):
        make_checkpoint(tmp_path, step, complete)
    (tmp_path / "checkpoint-x").mkdir()
    assert checkpoints.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")


def test_same_settings_resume_from_the_newest_checkpoint(tmp_path):
    work, lines = tmp_path / "work", []
    assert checkpoints.bind_work_dir(work, fingerprint(), log=lines.append) is None  # fresh: nothing to resume
    make_checkpoint(work, 2)
    make_checkpoint(work, 4)
    assert checkpoints.bind_work_dir(work, fingerprint(), log=lines.append) == str(work / "checkpoint-4")
    assert len(lines) == 1 and "resuming from checkpoint-4" in lines[0]


@pytest.mark.parametrize("change", [{"learning_rate": 2e-3}, {"max_steps": 20}, {"seed": 1}])
def test_other_settings_remove_the_stale_checkpoints_with_one_line(tmp_path, change):
    work, lines = tmp_path / "work", []
    checkpoints.bind_work_dir(work, fingerprint(), log=lines.append)
    make_checkpoint(work, 6)
    assert checkpoints.bind_work_dir(work, fingerprint(**change), log=lines.append) is None
    assert not (work / "checkpoint-6").exists()
    assert len(lines) == 1 and "removed 1 stale checkpoint(s) (checkpoint-6)" in lines[0]
    assert "training starts at step 1" in lines[0]
    assert checkpoints.recorded_hash(work) == checkpoints.trajectory_hash(fingerprint(**change))


def test_other_inputs_chat_format_batch_split_or_strategy_are_other_trajectories():
    base = checkpoints.trajectory_hash(fingerprint())
    assert checkpoints.trajectory_hash(checkpoints.trajectory(STAGE, "tulu", BATCH, {**INPUTS, "train": "cc"})) != base
    assert checkpoints.trajectory_hash(checkpoints.trajectory(STAGE, "alpaca", BATCH, INPUTS)) != base
    two = {**BATCH, "processes": 2, "gradient_accumulation_steps": 1, "micro_batch_size": 4}
    assert checkpoints.trajectory_hash(checkpoints.trajectory(STAGE, "tulu", two, INPUTS)) != base
    # the strategy in effect (a null strategy follows the resources, which are not hashed themselves)
    assert checkpoints.trajectory_hash(
        checkpoints.trajectory(STAGE, "tulu", two, INPUTS, "fsdp")
    ) != checkpoints.trajectory_hash(checkpoints.trajectory(STAGE, "tulu", two, INPUTS, "ddp"))


def test_cadence_and_budget_edits_keep_the_checkpoints(tmp_path):
    work = tmp_path / "work"
    checkpoints.bind_work_dir(work, fingerprint(), log=lambda line: None)
    make_checkpoint(work, 4)
    edited = fingerprint(save_steps=2, save_minutes=5, budget_gpu_hours=3.0, resources={"gpus": 0, "mem_gb": 9})
    assert checkpoints.bind_work_dir(work, edited, log=lambda line: None) == str(work / "checkpoint-4")


def test_checkpoints_from_before_binding_are_stale(tmp_path):
    work, lines = tmp_path / "work", []
    make_checkpoint(work, 40)  # an old work dir: no recorded settings
    assert checkpoints.bind_work_dir(work, fingerprint(), log=lines.append) is None
    assert "unrecorded settings" in lines[0] and not (work / "checkpoint-40").exists()


def test_other_ranks_wait_for_rank_0_and_resume_the_same_checkpoint(tmp_path):
    work = tmp_path / "work"
    checkpoints.bind_work_dir(work, fingerprint(), log=lambda line: None)
    make_checkpoint(work, 2)
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            resume=checkpoints.bind_work_dir(work, fingerprint(learning_rate=5e-4), is_main=False, wait_s=20)
        )
    )
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # rank 1 does not read the old settings' checkpoints
    checkpoints.bind_work_dir(work, fingerprint(learning_rate=5e-4), log=lambda line: None)
    waiter.join(20)
    assert result == {"resume": None}


def test_step_cadence_default_is_a_tenth_of_the_steps():
    assert checkpoints.save_steps({"save_steps": 64}, None) == 64
    assert checkpoints.save_steps({"save_steps": None}, 8) == 8  # keep_best: save at every evaluation
    assert checkpoints.save_steps({"save_steps": None}, None) == 0.1
    from transformers import TrainerState, TrainingArguments

    for total, expected in ((40, 4), (12, 2), (5100, 510)):
        state = TrainerState()
        state.compute_steps(TrainingArguments(output_dir="x", save_steps=0.1, report_to=[]), total)
        assert state.save_steps == expected


def test_time_callback_saves_when_the_minutes_passed_since_the_last_checkpoint():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    now = [0.0]
    callback = checkpoints.time_callback(30, clock=lambda: now[0])
    args, state = TrainingArguments(output_dir="x", report_to=[]), TrainerState()
    callback.on_train_begin(args, state, TrainerControl())
    now[0] = 29 * 60
    assert not callback.on_step_end(args, state, TrainerControl()).should_save
    now[0] = 30 * 60
    assert callback.on_step_end(args, state, TrainerControl()).should_save
    callback.on_save(args, state, TrainerControl())  # a step-cadence save also resets the clock
    now[0] = 59 * 60
    assert not callback.on_step_end(args, state, TrainerControl()).should_save
    off = checkpoints.time_callback(None, clock=lambda: now[0])
    now[0] = 1e9
    assert not off.on_step_end(args, state, TrainerControl()).should_save


def test_the_recorded_trajectory_names_what_it_binds(tmp_path):
    work = tmp_path / "work"
    checkpoints.bind_work_dir(work, fingerprint(), log=lambda line: None)
    record = json.loads((work / checkpoints.TRAJECTORY_FILE).read_text())
    assert record["trajectory"]["inputs"] == INPUTS and record["trajectory"]["chat_format"] == "tulu"
    assert "resources" not in record["trajectory"]["stage"] and record["trajectory"]["stage"]["learning_rate"] == 1e-3


def _rank_decides(rank: int, port: int, results) -> None:
    from types import SimpleNamespace

    import torch.distributed as dist
    from transformers import TrainerControl, TrainerState

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        now = [0.0]
        callback = checkpoints.time_callback(1, clock=lambda: now[0])
        args = SimpleNamespace(device="cpu")  # the callback reads only where the flag tensor lives
        now[0] = 61.0 if rank == 0 else 59.0  # only rank 0's clock has passed the minute
        results[rank] = callback.on_step_end(args, TrainerState(), TrainerControl()).should_save
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_agree_to_save_when_any_clock_is_due():
    """Two real gloo processes whose clocks disagree both save (a save only one rank enters would hang FSDP)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_decides, args=(port, results), nprocs=2, join=True)
        assert dict(results) == {0: True, 1: True}


def _two_ranks(rank: int, store: str, work: str, out: str) -> None:
    """One of two gloo ranks (CPU): rank 0 hashes and binds slowly (standing in for 140 GB of model files and
    ~1.1 TB of stale checkpoints on a shared filesystem); rank 1's file-poll budget (wait_s=1) is far shorter."""
    import json as _json
    import time as _time
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    try:
        calls = []

        def slow_hash():
            calls.append(rank)
            _time.sleep(3)
            return {"model": f"sha-from-rank-{rank}"}

        hashes = checkpoints.from_main_process(slow_hash, rank == 0)
        if rank == 0:
            _time.sleep(3)  # a slow removal of stale checkpoints before rank 0 binds
        resume = checkpoints.bind_work_dir(work, fingerprint(), is_main=rank == 0, wait_s=1, log=lambda line: None)
        Path(out, f"rank{rank}.json").write_text(_json.dumps({"hashes": hashes, "hashed": calls, "resume": resume}))
    finally:
        dist.destroy_process_group()


def test_only_rank_0_hashes_and_the_others_wait_for_its_slow_binding_with_2_cpu_ranks(tmp_path):
    import torch.multiprocessing as mp

    work = tmp_path / "work"
    checkpoints.bind_work_dir(work, fingerprint(), log=lambda line: None)
    make_checkpoint(work, 3)
    mp.spawn(_two_ranks, args=(str(tmp_path / "store"), str(work), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["hashed"] == [0] and ranks[1]["hashed"] == []  # one read of the inputs, on rank 0
    assert ranks[0]["hashes"] == ranks[1]["hashes"] == {"model": "sha-from-rank-0"}
    assert ranks[0]["resume"] == ranks[1]["resume"] == str(work / "checkpoint-3")
