"""The loss-curve PNG of a training stage carries the train curve and, where the recipe validates, the validation
curve (tiny-birbal evaluates every 8 steps)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from menagerie.config import load_config  # noqa: E402
from menagerie.train.artifacts import plot_loss_curve  # noqa: E402
from recipes import CONFIG_PATH  # noqa: E402


def history(steps: int, eval_every: int | None) -> list[dict]:
    log = [{"step": s, "loss": 3.0 / s} for s in range(1, steps + 1)]
    if eval_every:
        log += [{"step": s, "eval_loss": 3.5 / s} for s in range(eval_every, steps + 1, eval_every)]
    return sorted(log, key=lambda e: e["step"]) + [{"step": steps, "train_loss": 1.0}]


def test_loss_curve_has_train_and_validation_curves(tmp_path):
    birbal = load_config(CONFIG_PATH)["recipes"]["tiny-birbal"]["stages"]["sft"]
    path = tmp_path / "loss_curve.png"
    points = plot_loss_curve(history(birbal["max_steps"], birbal["eval_steps"]), path, "tiny-birbal / sft")
    assert points == {"train": birbal["max_steps"], "validation": birbal["max_steps"] // birbal["eval_steps"]}
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_curve_without_validation_has_only_the_train_curve(tmp_path):
    assert plot_loss_curve(history(6, None), tmp_path / "c.png", "t") == {"train": 6, "validation": 0}
