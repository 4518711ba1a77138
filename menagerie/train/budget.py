"""A compute budget that holds: counted over every stage and every retry of a run, decided by rank 0 for all ranks.

Two limits stop training:
* the stage's `budget_gpu_hours` (wall time x max(gpus, 1), so it fires on CPU too), and
* the recipe's `budget:` (gpu_hours and/or wall_hours, as a challenge's rules state them), counted from the start of
  the run over every stage and every attempt.

The run's clock is persisted in results/<recipe>/budget/ledger.jsonl: each training attempt appends a `start` line,
a `beat` line at least every HEARTBEAT_S seconds of training and an `end` line, so an attempt killed by a time
limit still counts up to its last beat (a retry continues from there). Stages that do not train (merge, evaluate)
count by the wall time their provenance records. Deleting results/<recipe>/budget (or `make clean`) starts a new run.

With several ranks (torchrun), rank 0 alone decides to stop and broadcasts the decision (torch.distributed), so every
rank leaves the loop at the same optimizer step and the checkpoint is saved collectively.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from menagerie.io import write_json

BUDGET_FILE = "menagerie_budget.json"  # in each checkpoint: the stage's GPU-hours when it was saved
LEDGER = Path("budget") / "ledger.jsonl"  # under results/<recipe>/
HEARTBEAT_S = 30.0


def ledger_path(recipe_dir: str | Path) -> Path:
    return Path(recipe_dir) / LEDGER


def read_ledger(recipe_dir: str | Path) -> list[dict]:
    path = ledger_path(recipe_dir)
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill mid-write: the attempt's earlier beats still count
            continue
    return lines


def append_ledger(recipe_dir: str | Path, entry: dict) -> None:
    """One JSON line, appended with a single write (O_APPEND), flushed to disk."""
    path = ledger_path(recipe_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def attempts(entries: list[dict]) -> dict[str, dict]:
    """Attempt id -> {stage, gpus, started, last, hours, ended, stopped_for_budget, trajectory} from ledger lines
    (trajectory: the checkpoints' trajectory hash the attempt trained, menagerie.train.checkpoints; None in lines
    written before it was recorded)."""
    out: dict[str, dict] = {}
    for e in entries:
        a = out.setdefault(
            e["attempt"],
            {
                "stage": e["stage"],
                "gpus": e.get("gpus", 0),
                "started": e["at"],
                "last": e["at"],
                "ended": False,
                "stopped_for_budget": False,
                "gpu_names": e.get("gpu_names", []),
                "trajectory": e.get("trajectory"),
            },
        )
        a["started"] = min(a["started"], e["at"])
        a["last"] = max(a["last"], e["at"])
        a["ended"] |= e.get("event") == "end"
        a["stopped_for_budget"] |= bool(e.get("stopped_for_budget"))
    for a in out.values():
        a["hours"] = (a["last"] - a["started"]) / 3600
    return out


def _stage_gpus(recipe: dict, record_name: str, record: dict) -> int:
    """GPUs a completed stage ran on: those its provenance saw, else those the recipe declared."""
    seen = ((record.get("environment") or {}).get("hardware") or {}).get("gpus")
    if seen is not None:
        return len(seen)
    if record_name.startswith("eval"):
        resources = recipe["eval"].get("resources") or {}
    elif record_name.endswith("_merged"):
        resources = (recipe["stages"].get("merge") or {}).get("resources") or {}
    else:
        resources = (recipe["stages"].get(record_name) or {}).get("resources") or {}
    return int(resources.get("gpus") or 0) * int(resources.get("nodes") or 1)


def stage_kind(name: str) -> str:
    """The budget's name for a usage entry: sft/dpo (training), merge (<stage>_merged), eval (eval.<which>)."""
    if name.startswith("eval"):
        return "eval"
    if name.endswith("_merged"):
        return "merge"
    return name


def counted(budget: dict | None, name: str) -> bool:
    """Whether the budget counts stage `name` (`counts:` null or absent: every stage)."""
    counts = (budget or {}).get("counts")
    return counts is None or stage_kind(name) in counts


def run_usage(
    recipe_dir: str | Path, recipe: dict, exclude_attempt: str | None = None, evaluations: dict[str, Path] | None = None
) -> dict:
    """GPU-hours and wall hours of the run so far, per stage, and whether the recipe's budget held.

    Training stages count from the ledger (every attempt), other stages from their provenance's wall_time_s.
    Evaluations: `evaluations` (role -> the shared metrics.json eval.json links), else <recipe_dir>/eval/<role>/
    (a bundle's layout)."""
    recipe_dir = Path(recipe_dir)
    ledgered = {k: v for k, v in attempts(read_ledger(recipe_dir)).items() if k != exclude_attempt}
    stages: dict[str, dict] = {}
    for attempt in ledgered.values():
        s = stages.setdefault(
            attempt["stage"],
            {
                "attempts": 0,
                "wall_hours": 0.0,
                "gpu_hours": 0.0,
                "gpus": 0,
                "source": "ledger",
                "stopped_for_budget": False,
            },
        )
        s["attempts"] += 1
        s["wall_hours"] += attempt["hours"]
        s["gpu_hours"] += attempt["hours"] * attempt["gpus"]
        s["gpus"] = max(s["gpus"], attempt["gpus"])
        s["stopped_for_budget"] |= attempt["stopped_for_budget"]
    records = [(p.parent.name, p) for p in sorted(recipe_dir.glob("*/provenance.json"))]
    if evaluations is None:
        records += [(f"eval.{p.parent.name}", p) for p in sorted(recipe_dir.glob("eval/*/metrics.provenance.json"))]
    else:
        records += [
            (f"eval.{role}", Path(m).with_suffix(".provenance.json"))
            for role, m in evaluations.items()
            if Path(m).with_suffix(".provenance.json").exists()
        ]
    for name, path in records:
        if name in stages or name in ("bundle", "budget"):
            continue
        record = json.loads(path.read_text())
        if "wall_time_s" not in record:
            continue
        gpus = _stage_gpus(recipe, name, record)
        hours = record["wall_time_s"] / 3600
        stages[name] = {
            "attempts": 1,
            "wall_hours": hours,
            "gpu_hours": hours * gpus,
            "gpus": gpus,
            "source": "provenance",
            "stopped_for_budget": bool(record.get("stopped_for_budget")),
        }
    budget = recipe.get("budget")
    for name, s in stages.items():
        s["counted"] = counted(budget, name)
    kept = [s for s in stages.values() if s["counted"]]
    usage = {
        "gpu_hours": sum(s["gpu_hours"] for s in kept),
        "wall_hours": sum(s["wall_hours"] for s in kept),
        "max_gpus": max((s["gpus"] for s in kept), default=0),
        "stages": stages,
    }
    usage.update(budget_verdict(recipe.get("budget"), usage))
    return usage


def budget_verdict(budget: dict | None, usage: dict) -> dict:
    """{"budget": ..., "held": bool | None, "overruns": [sentences]} for a usage against a recipe's budget."""
    if not budget:
        return {"budget": None, "held": None, "overruns": []}
    overruns = []
    if budget.get("gpu_hours") is not None and usage["gpu_hours"] > budget["gpu_hours"]:
        overruns.append(f"{usage['gpu_hours']:.3f} GPU-hours used, the budget allows {budget['gpu_hours']}")
    if budget.get("wall_hours") is not None and usage["wall_hours"] > budget["wall_hours"]:
        overruns.append(f"{usage['wall_hours']:.3f} wall hours used, the budget allows {budget['wall_hours']}")
    if budget.get("gpus") is not None and usage["max_gpus"] > budget["gpus"]:
        overruns.append(f"a stage used {usage['max_gpus']} GPUs, the budget allows {budget['gpus']}")
    return {"budget": budget, "held": not overruns, "overruns": overruns}


def remaining_minutes(recipe_dir: str | Path, recipe: dict, gpus: int) -> float | None:
    """Minutes a job on `gpus` GPUs may still run under the recipe's budget (None: no budget)."""
    budget = recipe.get("budget") or {}
    usage = run_usage(recipe_dir, recipe)
    left = []
    if budget.get("wall_hours") is not None:
        left.append((budget["wall_hours"] - usage["wall_hours"]) * 60)
    if budget.get("gpu_hours") is not None and gpus > 0:
        left.append((budget["gpu_hours"] - usage["gpu_hours"]) / gpus * 60)
    return max(min(left), 0.0) if left else None


def cap_runtime(minutes: int, declared: int, recipe_dir: str | Path, recipe: dict, stage: str | None, gpus: int) -> int:
    """A SLURM time limit: `minutes` (the stage's declared runtime, grown with the retry attempt) never grows beyond
    what the recipe's budget has left, but stays at least the `declared` runtime (the recipe's margin to load and
    save around a training budget); a spent budget gets 1 minute, so the job fails fast instead of running on."""
    if not counted(recipe.get("budget"), stage or ""):
        return minutes
    left = remaining_minutes(recipe_dir, recipe, gpus)
    if left is None:
        return minutes
    if left <= 0:
        return 1
    return min(minutes, max(declared, int(left)))


def used_gpu_hours_at(checkpoint: str | Path | None) -> float:
    """GPU-hours the stage had spent when `checkpoint` was saved (0 for a fresh run or an older checkpoint)."""
    if not checkpoint:
        return 0.0
    path = Path(checkpoint) / BUDGET_FILE
    if not path.is_file():
        return 0.0
    try:
        return float(json.loads(path.read_text())["used_gpu_hours"])
    except (OSError, ValueError, KeyError, TypeError):  # written by an older version non-atomically, cut by a kill
        print(
            f"note: {path} is unreadable; the stage's GPU-hours before this attempt count as 0 (the run's ledger, "
            f"where there is one, still counts them)",
            flush=True,
        )
        return 0.0


def agree(stop: bool) -> bool:
    """Rank 0's decision, on every rank (a broadcast when torch.distributed is initialised; `stop` otherwise)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return stop
    if not (dist.is_available() and dist.is_initialized()):
        return stop
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1 if stop else 0], dtype=torch.int32, device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def trajectory_attempts(ledger: dict[str, dict], stage: str, trajectory: str | None) -> list[dict]:
    """The ledger attempts that count toward a stage's `budget_gpu_hours`: those of this stage on this trajectory
    (same settings and inputs: the steps its checkpoints resume) since the last one that finished it (ended without
    stopping for the budget). Attempts with other settings, or of an earlier finished build, trained other steps;
    the recipe's `budget:` still counts them all (run_usage)."""
    same = sorted(
        (a for a in ledger.values() if a["stage"] == stage and a.get("trajectory") == trajectory),
        key=lambda a: a["started"],
    )
    finished = [i for i, a in enumerate(same) if a["ended"] and not a["stopped_for_budget"]]
    return same[finished[-1] + 1 :] if finished else same


def budget_callback(
    budget_gpu_hours: float | None,
    gpus: int,
    resume_from: str | Path | None = None,
    *,
    recipe_dir: str | Path | None = None,
    recipe: dict | None = None,
    stage: str = "train",
    trajectory: str | None = None,
):
    """A TrainerCallback that stops training when the stage's or the run's budget is spent (checkpoint saved).

    Without `recipe_dir` only the stage budget counts, from the figure in the checkpoint resumed from. With it, the
    stage's earlier attempts on the same `trajectory` (trajectory_attempts) count, killed ones included."""
    from transformers import TrainerCallback

    rank0 = int(os.environ.get("RANK", "0")) == 0
    run_budget = (recipe or {}).get("budget") or {}
    if not counted(run_budget, stage):  # a budget that counts other stages does not stop this one
        run_budget = {}

    class BudgetCallback(TrainerCallback):
        def __init__(self):
            self.start = time.time()
            self.stopped_for_budget = False
            self.attempt = f"{stage}-{os.getpid()}-{int(self.start * 1000)}"
            self.last_beat = self.start
            self.previous_gpu_hours = used_gpu_hours_at(resume_from)
            self.run_before = {"gpu_hours": 0.0, "wall_hours": 0.0}
            if recipe_dir is not None and recipe is not None:
                before = attempts(read_ledger(recipe_dir))
                stage_attempts = trajectory_attempts(before, stage, trajectory)
                if stage_attempts:  # the ledger counts killed attempts too; the checkpoint only saved ones
                    self.previous_gpu_hours = sum(a["hours"] * max(a["gpus"], 1) for a in stage_attempts)
                usage = run_usage(recipe_dir, recipe)
                self.run_before = {"gpu_hours": usage["gpu_hours"], "wall_hours": usage["wall_hours"]}
                self._write("start")

        def _write(self, event: str, **fields) -> None:
            if recipe_dir is None or not rank0:
                return
            append_ledger(
                recipe_dir,
                {
                    "attempt": self.attempt,
                    "stage": stage,
                    "gpus": gpus,
                    "event": event,
                    "at": time.time(),
                    "trajectory": trajectory,
                    **fields,
                },
            )
            self.last_beat = time.time()

        def elapsed_hours(self) -> float:
            return (time.time() - self.start) / 3600

        def used_gpu_hours(self) -> float:
            """The stage's GPU-hours (wall time x max(gpus, 1), resumed attempts included)."""
            return self.previous_gpu_hours + self.elapsed_hours() * max(gpus, 1)

        def spent(self) -> str | None:
            """Which budget is spent, or None."""
            if budget_gpu_hours is not None and self.used_gpu_hours() >= budget_gpu_hours:
                return f"stage budget_gpu_hours {budget_gpu_hours}"
            if (
                run_budget.get("gpu_hours") is not None
                and self.run_before["gpu_hours"] + self.elapsed_hours() * gpus >= run_budget["gpu_hours"]
            ):
                return f"run budget gpu_hours {run_budget['gpu_hours']}"
            if (
                run_budget.get("wall_hours") is not None
                and self.run_before["wall_hours"] + self.elapsed_hours() >= run_budget["wall_hours"]
            ):
                return f"run budget wall_hours {run_budget['wall_hours']}"
            return None

        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir() and state.is_world_process_zero:
                # atomic: the checkpoint counts as complete (trainer_state.json) before this is written, so a kill
                # mid-write must not leave a cut file that every resume from it would then fail to read
                write_json(
                    {"used_gpu_hours": self.used_gpu_hours(), "global_step": state.global_step},
                    checkpoint / BUDGET_FILE,
                )
            return control

        def on_step_end(self, args, state, control, **kwargs):
            reason = self.spent() if rank0 else None
            if agree(reason is not None):
                self.stopped_for_budget = True
                control.should_training_stop = True
                control.should_save = True
                # evaluate the stopping point only where the run evaluates at all: with no validation set
                # (eval_strategy "no", eval_dataset None) Trainer.evaluate would raise
                control.should_evaluate = args.eval_strategy != "no"
                self._write("beat", step=state.global_step, stopped_for_budget=True, reason=reason)
            elif time.time() - self.last_beat >= HEARTBEAT_S:
                self._write("beat", step=state.global_step)
            return control

        def on_train_end(self, args, state, control, **kwargs):
            self._write("end", step=state.global_step, stopped_for_budget=self.stopped_for_budget)
            return control

    return BudgetCallback()


def stage_budget(
    recipe: dict, stage: str, out_dir: str | Path, resume_from: str | Path | None, trajectory: str | None = None
):
    """The budget callback of a training stage writing `out_dir` = results/<recipe>/<stage>; `trajectory`: the
    hash its work dir is bound to (checkpoints.trajectory_hash)."""
    settings = recipe["stages"][stage]
    resources = settings.get("resources") or {}
    gpus = int(resources.get("gpus") or 0) * int(resources.get("nodes") or 1)
    return budget_callback(
        settings.get("budget_gpu_hours"),
        gpus,
        resume_from,
        recipe_dir=Path(out_dir).parent,
        recipe=recipe,
        stage=stage,
        trajectory=trajectory,
    )
