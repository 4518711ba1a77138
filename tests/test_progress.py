"""Observable runs (menagerie.train.progress): the progress line and the experiment trackers a recipe reports to.
A real training run's lines are checked in tests/test_budget.py (2 ranks: rank 0 alone prints)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
    assert report_to("r", {}) == (["tensorboard"] if installed else [])  # never W&B by default
    assert report_to("r", {"report_to": []}) == [] and report_to("r", {"report_to": "none"}) == []
    options = trainer_options("r", {"report_to": "none"}, "dpo")
    assert options["include_num_input_tokens_seen"] == "non_padding" and options["run_name"] == "r/dpo"
    if installed:
        assert report_to("r", {"report_to": "tensorboard"}) == ["tensorboard"]
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"recipe 'r': key 'report_to' lists wandb, which is not installed"):
            report_to("r", {"report_to": ["wandb"]})


def test_report_to_in_the_config_takes_none_a_name_or_a_list(tmp_path):
    from menagerie.config import load_config

    base = Path(__file__).resolve().parents[1] / "config.yaml"
    for value, ok in (
        ("none", True),
        ("tensorboard", True),
        ("[tensorboard, wandb]", True),
        ("[]", True),
        ("comet", False),
        ("[none]", False),
    ):
        overlay = tmp_path / "o.yaml"
        overlay.write_text(f"recipes:\n  tiny-tulu2-dpo:\n    report_to: {value}\n")
        if ok:
            assert "report_to" in load_config(base, overlay)["recipes"]["tiny-tulu2-dpo"]
        else:
            with pytest.raises(ConfigError, match="report_to"):
                load_config(base, overlay)
