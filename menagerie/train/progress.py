"""Observable training: a progress line at a steady interval in the stage's log, and the recipe's experiment trackers.

The line (rank 0 only, stdout, which the Snakemake rule sends to logs/<recipe>/<stage>.log):

    progress sft: step 12/40 (30%) loss 1.8123 | 1,520 tokens/s | elapsed 1m02s | ETA 2m25s

tokens/s counts the non-padding input tokens of every rank (transformers' include_num_input_tokens_seen); the ETA is
the steps left at this attempt's pace so far.

Trackers (`report_to:` per recipe): unset means TensorBoard when it is installed in the environment (it is in the
lock; event files under the stage's work dir, results/<recipe>/.work/<stage>/runs/<time>_<host>/, one folder per
attempt), else none; `none` or [] for none; W&B and the others only when the recipe lists them (and the user's
environment configures them: WANDB_PROJECT, WANDB_MODE, ...). Nothing leaves the machine by default. The run is named
<recipe>/<stage> in every tracker (TrainingArguments.run_name).
"""

from __future__ import annotations

import importlib.util
import sys
import time

from menagerie.errors import ConfigError

INTERVAL_S = 30.0
TRACKER_MODULES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "trackio": ("trackio",),
}


def _installed(tracker: str) -> bool:
    return any(importlib.util.find_spec(m) is not None for m in TRACKER_MODULES[tracker])


def report_to(recipe_name: str, recipe: dict) -> list[str]:
    """The trackers a training stage reports to (transformers' report_to)."""
    chosen = recipe.get("report_to")
    if chosen is None:
        return ["tensorboard"] if _installed("tensorboard") else []
    if isinstance(chosen, str):  # `report_to: none` or one tracker's name
        chosen = [] if chosen == "none" else [chosen]
    missing = [t for t in chosen if not _installed(t)]
    if missing:
        raise ConfigError(
            f"recipe '{recipe_name}': key 'report_to' lists {', '.join(missing)}, which is not installed "
            f"in this environment; add it to the environment or remove it from report_to"
        )
    return list(chosen)


def trainer_options(recipe_name: str, recipe: dict, stage: str) -> dict:
    """TrainingArguments the observability needs: trackers and the run's name in them, and the token count behind
    tokens/s. TensorBoard writes under TrainingArguments.output_dir (the stage's work dir), transformers 5's default
    (TensorBoardCallback: <output_dir>/runs/<time>_<host>, or $TENSORBOARD_LOGGING_DIR when the user sets it)."""
    return {
        "report_to": report_to(recipe_name, recipe),
        "run_name": f"{recipe_name}/{stage}",
        "include_num_input_tokens_seen": "non_padding",
    }


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def progress_line(
    stage: str, step: int, max_steps: int, loss: float | None, tokens: int | None, elapsed: float, steps_done: int
) -> str:
    """One progress line; `steps_done` and `tokens` count this attempt only (a resumed run starts past step 0)."""
    parts = [f"progress {stage}: step {step}/{max_steps}" + (f" ({100 * step / max_steps:.0f}%)" if max_steps else "")]
    if loss is not None:
        parts[0] += f" loss {loss:.4f}"
    if tokens is not None and elapsed > 0:
        parts.append(f"{tokens / elapsed:,.0f} tokens/s")
    parts.append(f"elapsed {_duration(elapsed)}")
    if steps_done > 0 and max_steps:
        parts.append(f"ETA {_duration((max_steps - step) * elapsed / steps_done)}")
    return " | ".join(parts)


def progress_callback(stage: str, interval_s: float = INTERVAL_S, stream=None):
    """A TrainerCallback printing progress_line on the first logged step, then every `interval_s`, and at the end
    (the last step's line, once)."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self):
            self.start = time.time()
            self.last = 0.0
            self.first_step = 0
            self.first_tokens = 0
            self.loss = None
            self.lines: list[str] = []
            self.emitted_step = -1

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.time()
            self.first_step, self.first_tokens = state.global_step, state.num_input_tokens_seen or 0
            return control

        def _emit(self, state) -> None:
            if not state.is_world_process_zero:
                return
            seen = state.num_input_tokens_seen
            line = progress_line(
                stage,
                state.global_step,
                state.max_steps,
                self.loss,
                (seen - self.first_tokens) if seen else None,
                time.time() - self.start,
                state.global_step - self.first_step,
            )
            self.lines.append(line)
            self.emitted_step = state.global_step
            print(line, file=stream or sys.stdout, flush=True)
            self.last = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = logs["loss"]
                if not self.lines or time.time() - self.last >= interval_s:
                    self._emit(state)
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if self.emitted_step != state.global_step:  # the last step's line, unless it was just printed
                self._emit(state)
            return control

    return ProgressCallback()
