"""Observable runs (menagerie.train.progress): the progress line and the experiment trackers a recipe reports to.
A real training run's lines are checked in tests/test_budget.py (2 ranks: rank 0 alone prints)."""

from __future__ import annotations

import importlib.util

import pytest

from menagerie.errors import ConfigError
from menagerie.train.progress import progress_line, report_to, trainer_options


def test_progress_line_has_step_loss_throughput_and_eta():
    line = progress_line("sft", 12, 40, 1.81234, 91_200, 60.0, 12)
    assert line == "progress sft: step 12/40 (30%) loss 1.8123 | 1,520 tokens/s | elapsed 1m00s | ETA 2m20s"
    # a resumed attempt: pace from the steps this attempt ran (2 in 10 s), 30 steps left
    assert progress_line("dpo", 10, 40, None, None, 10.0, 2).endswith("elapsed 0m10s | ETA 2m30s")
    assert progress_line("sft", 1, 40, 2.0, 10, 7300.0, 1).split(" | ")[2] == "elapsed 2h01m40s"


def test_trackers_default_to_local_tensorboard_and_never_leave_silently():
    installed = importlib.util.find_spec("tensorboard") is not None
    assert report_to("r", {}) == (["tensorboard"] if installed else [])       # never W&B by default
    assert report_to("r", {"report_to": []}) == []
    assert trainer_options("r", {"report_to": []})["include_num_input_tokens_seen"] == "non_padding"
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"recipe 'r': key 'report_to' lists wandb, which is not installed"):
            report_to("r", {"report_to": ["wandb"]})
