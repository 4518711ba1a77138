"""A training stage's checkpoints: when they are written, and which run they may resume.

Checkpoints live in `results/<recipe>/.work/<stage>` and survive a failed or killed job, so a rerun resumes from the
newest complete one. They are bound to their trajectory: the work directory records the hash of everything that
determines the training steps (input model and data files, the stage's settings, chat format, batch split). A rerun
with other settings finds another hash, removes the stale checkpoints (one log line) and starts at step 1, instead of
"resuming" a run that belongs to different settings.

Cadence: every `save_steps` steps (null: a tenth of the stage's total steps, so every stage of every recipe has
several resume points) and, independently, whenever `save_minutes` of training passed since the last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAJECTORY_FILE = "menagerie_trajectory.json"
# Stage settings that change when or whether training stops or saves, never the steps themselves: editing them keeps
# the checkpoints (a raised budget continues the same run).
NOT_TRAJECTORY = ("resources", "save_steps", "save_minutes", "budget_gpu_hours")
# save_steps null: checkpoint every tenth of the total steps (transformers reads a save_steps < 1 as that ratio)
DEFAULT_SAVE_FRACTION = 0.1


def save_steps(stage: dict, eval_steps: int | None) -> int | float:
    """The step cadence: the recipe's save_steps, else its eval_steps (keep_best needs saves at evaluations), else a
    tenth of the total steps."""
    return stage["save_steps"] or eval_steps or DEFAULT_SAVE_FRACTION


def last_checkpoint(work_dir: str | Path) -> str | None:
    """The newest *complete* checkpoint under work_dir, or None.

    Trainer writes trainer_state.json last when it saves a checkpoint, so a directory without it was cut off by a
    kill mid-save; resuming from it would fail, so the previous checkpoint is used instead.
    """
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return None
    complete = [
        (int(m.group(1)), d)
        for d in work_dir.iterdir()
        if (m := CHECKPOINT_RE.match(d.name)) and (d / "trainer_state.json").is_file()
    ]
    return str(max(complete)[1]) if complete else None


def trajectory(
    stage: dict, chat_format: str, batch: dict, input_sha256: dict[str, str], sharing: str | None = None
) -> dict:
    """Everything that determines a stage's training steps and its checkpoints' layout: input files (model
    directory, training and validation rows, by sha256), the stage's settings, the chat format, the per-device batch
    split and the strategy in effect (a `strategy: null` stage's choice follows its resources, which are otherwise
    left out; a DDP checkpoint cannot resume an FSDP run, nor the reverse)."""
    return {
        "stage": {k: v for k, v in sorted(stage.items()) if k not in NOT_TRAJECTORY},
        "chat_format": chat_format,
        "batch": batch,
        "inputs": dict(sorted(input_sha256.items())),
        "strategy": sharing,
    }


def trajectory_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recorded_hash(work_dir: Path) -> str | None:
    try:
        return json.loads((Path(work_dir) / TRAJECTORY_FILE).read_text())["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# How long the other ranks of a launch wait for rank 0's one-off work before the job fails (the process group's
# timeout, TrainingArguments.ddp_timeout): rank 0 may hash a 140 GB model directory and remove ~1.1 TB of stale
# sharded checkpoints on a shared filesystem first. 3 h is far above either at shared-filesystem speeds (>= 100 MB/s
# hashing, metadata-bound removal) and far below a job's time limit; transformers' default is 30 min.
RANK0_WAIT_S = 3 * 3600


def _process_group():
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return None
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def from_main_process(compute, is_main: bool):
    """`compute()` run on rank 0 only, its result on every rank (torch.distributed.broadcast_object_list); without a
    process group of several ranks, `compute()` itself. The other ranks wait in the broadcast, i.e. up to the
    process group's timeout (RANK0_WAIT_S), however long rank 0 takes. A failure on rank 0 fails every rank."""
    dist = _process_group()
    if dist is None:
        return compute()
    box: list[Any] = [None]
    if is_main:
        try:
            box = [("ok", compute())]
        except BaseException as exc:
            dist.broadcast_object_list([("error", f"{type(exc).__name__}: {exc}")], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status != "ok":
        from menagerie.errors import MenagerieError

        raise MenagerieError(f"rank 0 failed before training: {value}")
    return value


def bind_work_dir(
    work_dir: str | Path, fingerprint: dict, is_main: bool = True, wait_s: float = 600.0, log=None
) -> str | None:
    """Make `work_dir` hold checkpoints of this trajectory only; return the checkpoint to resume from (or None).

    Checkpoints recorded under another hash (or none: made before checkpoints were bound) are removed, with one log
    line. Only the main process changes the directory; in a multi-process launch the other ranks receive its answer
    (from_main_process: they wait as long as the removal takes, up to the process group's timeout). Without a
    process group a non-main caller polls until the trajectory is recorded (at most `wait_s`).
    """
    if _process_group() is not None:
        return from_main_process(lambda: _bind(Path(work_dir), fingerprint, log), is_main)
    if is_main:
        return _bind(Path(work_dir), fingerprint, log)
    work_dir = Path(work_dir)
    wanted = trajectory_hash(fingerprint)
    deadline = time.time() + wait_s
    while recorded_hash(work_dir) != wanted:
        if time.time() > deadline:
            from menagerie.errors import MenagerieError

            raise MenagerieError(f"{work_dir}: rank 0 did not record the training settings within {wait_s:.0f} s")
        time.sleep(0.2)
    return last_checkpoint(work_dir)


def _bind(work_dir: Path, fingerprint: dict, log=None) -> str | None:
    log = log or (lambda line: print(line, flush=True))
    wanted = trajectory_hash(fingerprint)
    found = recorded_hash(work_dir)
    if found != wanted and work_dir.is_dir() and any(work_dir.iterdir()):
        checkpoints = sorted(d.name for d in work_dir.iterdir() if CHECKPOINT_RE.match(d.name))
        shutil.rmtree(work_dir)
        if checkpoints:
            made = f"settings {found}" if found else "unrecorded settings"
            log(
                f"{work_dir}: removed {len(checkpoints)} stale checkpoint(s) ({', '.join(checkpoints)}) made with "
                f"{made}, not this run's {wanted}; training starts at step 1"
            )
    work_dir.mkdir(parents=True, exist_ok=True)
    if found != wanted:
        tmp = work_dir / f"{TRAJECTORY_FILE}.tmp-{os.getpid()}"
        tmp.write_text(
            json.dumps({"hash": wanted, "trajectory": fingerprint}, indent=1, sort_keys=True, default=str) + "\n"
        )
        os.replace(tmp, work_dir / TRAJECTORY_FILE)
    resume = last_checkpoint(work_dir)
    if resume:
        log(f"{work_dir}: resuming from {Path(resume).name} (same settings, {wanted})")
    return resume


def time_callback(minutes: float | None, clock=time.monotonic):
    """A TrainerCallback that also saves a checkpoint once `minutes` of training passed since the last one (or since
    training started), so a kill loses at most that much work whatever the step cadence. In a multi-process launch
    the ranks agree on the decision (the slowest clock of none would deadlock a sharded save)."""
    from transformers import TrainerCallback

    class SaveEveryMinutes(TrainerCallback):
        def __init__(self):
            self.last = clock()

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = clock()

        def on_save(self, args, state, control, **kwargs):
            self.last = clock()

        def on_step_end(self, args, state, control, **kwargs):
            if minutes is None:
                return control
            due = clock() - self.last >= minutes * 60
            if _agree(due, args):
                control.should_save = True
            return control

    return SaveEveryMinutes()


def _agree(flag: bool, args) -> bool:
    """True on every rank when it is true on any (all-reduce max); the flag itself in a single process."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return flag
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    value = torch.tensor([int(flag)], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
