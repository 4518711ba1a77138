"""Honest cards and pages (issue 13, #6): the model card's numbers, wall time over attempts, no leftover temporary
directories, leaderboard rounding, chart captions, and builds that differ from the published recipe.

Fast and offline except the last test, which SIGKILLs a real `scripts/train.py sft` run (tiny random Llama) and
resumes it."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from menagerie.config import load_config
from menagerie.io import atomic_directory, remove_stale_tmp_dirs
from menagerie.leaderboard import render_markdown, write_leaderboard
from menagerie.overrides import diff, override_summary, recipe_overrides
from menagerie.provenance import ATTEMPTS_FILE, stage_record
from menagerie.report import build_eval_entry
from menagerie.rounding import fmt, round_half_up
from menagerie.train.artifacts import settings_rows, train_loss_over_steps

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(REPO / "config.yaml")


# ------------------------------------------------------------------------------------------- train loss


def test_train_loss_covers_every_step_of_both_attempts():
    # attempt 1 logged steps 1-2 and checkpointed at 2; attempt 2 resumed (log_history restored from the checkpoint)
    # and logged 3-4, then Trainer's own train_loss, which averages attempt 2's steps only: (2.5 + 1.5) / 2
    history = [
        {"step": 1, "loss": 4.0},
        {"step": 2, "loss": 3.0},
        {"step": 3, "loss": 2.5},
        {"step": 4, "loss": 1.5},
        {"step": 4, "train_loss": 2.0},
    ]
    assert train_loss_over_steps(history) == (4.0 + 3.0 + 2.5 + 1.5) / 4 == 2.75


def test_train_loss_weights_each_log_by_the_steps_it_covers():
    # logging every 2 steps: the step-2 log is the mean of steps 1-2, the step-5 log (cut short) of steps 3-5
    history = [{"step": 2, "loss": 3.5}, {"step": 5, "loss": 2.0}, {"step": 5, "eval_loss": 9.0}]
    assert train_loss_over_steps(history) == pytest.approx((3.5 * 2 + 2.0 * 3) / 5)  # 2.6


def test_a_step_logged_twice_counts_once_with_the_later_value():
    history = [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 7.0}, {"step": 2, "loss": 2.0}]
    assert train_loss_over_steps(history) == 3.0
    assert train_loss_over_steps([{"step": 1, "eval_loss": 1.0}]) is None


def test_card_settings_name_learning_rate_lora_and_batch(config):
    twin = config["recipes"]["tiny-tulu2-dpo"]["stages"]["sft"]  # full fine-tuning
    stage = {**twin, "method": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}}
    batch = {"global_batch_size": 8, "micro_batch_size": 4, "gradient_accumulation_steps": 2, "processes": 1}
    rows = dict(settings_rows(stage, batch))
    lora = stage["lora"]
    assert rows["learning rate"].startswith(f"{stage['learning_rate']:g} ({stage['lr_scheduler']} schedule")
    assert rows["LoRA"] == (
        f"r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']:g}, targets {lora['target_modules']}"
    )
    assert rows["global batch"] == "8 = 4 per device x 2 accumulation x 1 process(es)"
    assert rows["learning rate"].endswith(f"warmup {stage['warmup_ratio']:g} of the steps)")
    assert (
        dict(settings_rows({**stage, "warmup_steps": 0, "warmup_ratio": 0.0}, batch))["learning rate"]
        == f"{stage['learning_rate']:g} ({stage['lr_scheduler']} schedule, no warmup)"
    )
    full = dict(settings_rows(twin, batch))
    assert "LoRA" not in full and full["method"] == "full"


# ------------------------------------------------------------------------------------------- wall time


def test_wall_time_adds_the_interrupted_attempts(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    # an attempt killed with SIGKILL left its last tick behind
    (work / ATTEMPTS_FILE).write_text(
        json.dumps({"attempts": [{"started": "x", "pid": 1, "wall_time_s": 12.5}], "complete": False})
    )
    with stage_record("sft", tmp_path / "out.json", attempts_dir=work) as record:
        pass
    this = record["attempt_wall_time_s"]
    assert [a["wall_time_s"] for a in record["attempts"]] == [12.5, this]
    assert record["wall_time_s"] == pytest.approx(12.5 + this, abs=0.011)
    assert json.loads((tmp_path / "out.json").read_text())["wall_time_s"] == record["wall_time_s"]
    assert json.loads((work / ATTEMPTS_FILE).read_text())["complete"] is True

    # a successful build closes the list: a forced rebuild in the same work directory starts a new one
    with stage_record("sft", tmp_path / "again.json", attempts_dir=work) as again:
        pass
    assert len(again["attempts"]) == 1 and again["wall_time_s"] == again["attempt_wall_time_s"]


def test_a_failed_attempt_keeps_its_time_for_the_next(tmp_path):
    with pytest.raises(RuntimeError), stage_record("sft", tmp_path / "out.json", attempts_dir=tmp_path):
        raise RuntimeError("boom")
    saved = json.loads((tmp_path / ATTEMPTS_FILE).read_text())
    assert saved["complete"] is False and len(saved["attempts"]) == 1 and saved["attempts"][0]["wall_time_s"] > 0
    assert not (tmp_path / "out.json").exists()


# ------------------------------------------------------------------------------------------- tmp directories


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_tmp_dirs_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "sft"
    dead = tmp_path / f".sft.tmp-{_dead_pid()}"
    (dead / "sub").mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".sft.tmp-{sleeper.pid}"
        live.mkdir()
        other = tmp_path / f".dpo.tmp-{_dead_pid()}"  # another output's: not ours to judge here
        other.mkdir()
        with atomic_directory(target) as tmp:
            assert not dead.exists() and live.is_dir() and other.is_dir()
            (tmp / "x").write_text("1")
        assert (target / "x").read_text() == "1"
        assert remove_stale_tmp_dirs(tmp_path / "dpo") == [other]
        assert live.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_sigterm_removes_the_stage_tmp_dir(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from menagerie.cli_support import run_cli
        from menagerie.io import atomic_directory

        def main(argv):
            with atomic_directory(Path({str(tmp_path / "out")!r})) as tmp:
                (tmp / "started").write_text("")
                time.sleep(60)

        run_cli(main)
    """)
    )
    child = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while not list(tmp_path.glob(".out.tmp-*/started")):
        assert child.poll() is None and time.time() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert not list(tmp_path.glob(".out.tmp-*")) and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- rounding


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (7.75, 1, "7.8"),
        (1.25, 1, "1.3"),  # both exact in binary: half-even gave 7.8 and 1.2
        (2.675, 2, "2.68"),  # binary value just below 2.675: format() gave 2.67
        (0.05, 1, "0.1"),
        (-1.25, 1, "-1.3"),
        (-0.04, 1, "0.0"),
        (43.75, 1, "43.8"),
        (60, 1, "60.0"),
        (None, 1, "—"),
    ],
)
def test_rounding_is_half_up_on_the_decimal_shown(value, digits, text):
    assert fmt(value, digits) == text
    assert round_half_up(value, digits) == (None if value is None else float(text))


def test_signed_rounding():
    assert fmt(1.25, signed=True) == "+1.3" and fmt(-1.25, signed=True) == "-1.3" and fmt(0.04, signed=True) == "+0.0"


def _metrics(tasks: dict) -> dict:
    return {
        "recipe": "x",
        "which": "final",
        "model": "m",
        "backend": "vllm",
        "dtype": "float32",
        "batch_size": 16,
        "backend_settings": {},
        "library_versions": {},
        "seed": 1234,
        "chat_format": "tulu",
        "chat_template_sha256": "0" * 64,
        "tasks": tasks,
    }


def _ok(value: float, stderr: float) -> dict:
    return {"status": "ok", "harness": "lm-eval", "metric": "exact_match", "value": value, "stderr": stderr, "n": 200}


def _write(path: Path, entry: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry))
    return path


def test_leaderboard_md_html_and_json_round_alike(config, tmp_path):
    final = _metrics({"heldout_exact": _ok(7.75, 1.25), "humaneval_pass1": _ok(1.25, 0.05)})
    base = _metrics({"heldout_exact": _ok(6.5, 1.0), "humaneval_pass1": _ok(0.0, 0.0)})
    entry = build_eval_entry(config, "tiny-tulu2-dpo", final, base, {}, "final")
    paths = {name: tmp_path / f"leaderboard.{name}" for name in ("json", "md", "html")}
    write_leaderboard([_write(tmp_path / "tiny-tulu2-dpo/eval.json", entry)], paths["json"], paths["md"], paths["html"])
    row = json.loads(paths["json"].read_text())["rows"][0]
    # average (7.75 + 1.25) / 2 = 4.5; delta vs base 7.75 - 6.5 = 1.25 -> 1.3
    assert row["average"] == 4.5
    held = row["tasks"]["heldout_exact"]
    assert (held["value"], held["stderr"], held["delta_vs_base"]) == (7.8, 1.3, 1.3)
    assert row["tasks"]["humaneval_pass1"]["value"] == 1.3 and row["tasks"]["humaneval_pass1"]["stderr"] == 0.1
    md, html = paths["md"].read_text(), paths["html"].read_text()
    assert "7.8 ± 1.3 (Δbase +1.3" in md and "1.3 ± 0.1" in md
    assert "7.8 ± 1.3" in html and "Δbase +1.3" in html and "1.3 ± 0.1" in html


# ------------------------------------------------------------------------------------------- chart caption


def test_caption_mentions_the_dashed_line_only_where_the_chart_draws_it(monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from menagerie import leaderboard_html

    drawn = []
    original = Axes.hlines
    monkeypatch.setattr(Axes, "hlines", lambda self, *a, **k: drawn.append(a) or original(self, *a, **k))

    def rows(published):
        return [
            {
                "recipe": "r",
                "tiny": True,
                "eval_json": "r/eval.json",
                "tasks": {"t": {"status": "ok", "suite": "s", "value": 50.0, "stderr": 1.0, "published": published}},
            }
        ]

    for published in (None, 55.3):
        drawn.clear()
        leaderboard_html.suite_chart("s", ["t"], rows(published))
        caption = leaderboard_html.chart_caption("s", ["t"], rows(published))
        html = leaderboard_html.render_html(rows(published), {"s.png": b"png"})
        assert (len(drawn) == 1) == (published is not None) == ("dashed: the paper" in caption)
        assert ("dashed" in caption) == (published is not None)
        assert leaderboard_html.escape(caption) in html


# ------------------------------------------------------------------------------------------- overrides


def test_diff_lists_changed_added_and_removed_leaves():
    assert diff({"a": {"x": 1, "y": [1, 2]}, "b": 2}, {"a": {"x": 1, "y": [1, 3]}, "c": 3}) == {
        "a.y": {"published": [1, 2], "used": [1, 3]},
        "b": {"published": 2, "used": None},
        "c": {"published": None, "used": 3},
    }


def test_a_configfile_override_is_recorded_in_eval_json_and_marked_on_the_leaderboard(config, tmp_path):
    final = _metrics({"heldout_exact": _ok(60.0, 3.5), "humaneval_pass1": _ok(10.0, 5.0)})
    published = build_eval_entry(config, "tiny-tulu2-dpo", final, None, {}, "final")
    assert published["provenance"]["overrides"] == {
        "published_recipe": True,
        "changed": {},
        "compared_with": "config.yaml",
    }

    changed = copy.deepcopy(config)
    sft = changed["recipes"]["tiny-tulu2-dpo"]["stages"]["sft"]
    lr = sft["learning_rate"]
    sft["learning_rate"] = lr * 2
    entry = build_eval_entry(changed, "tiny-tulu2-dpo", final, None, {}, "final")
    assert entry["provenance"]["overrides"]["changed"] == {
        "recipes.tiny-tulu2-dpo.stages.sft.learning_rate": {"published": lr, "used": lr * 2}
    }

    paths = [_write(tmp_path / "a/eval.json", entry)]
    md_out, html_out = tmp_path / "l.md", tmp_path / "l.html"
    rows = write_leaderboard(paths, tmp_path / "l.json", md_out, html_out)
    assert rows[0]["modified"] == (
        "modified by a --configfile: 1 setting(s) differ from config.yaml "
        "(recipes.tiny-tulu2-dpo.stages.sft.learning_rate)"
    )
    assert "tiny-tulu2-dpo](a/eval.json) (modified*)" in md_out.read_text().replace(str(tmp_path) + "/", "")
    assert 'class="modified"' in html_out.read_text()
    unmarked = render_markdown([{**rows[0], "modified": None}])
    assert "modified" not in unmarked


def test_a_recipe_of_the_users_own_is_marked_as_not_published(config, tmp_path):
    mine = copy.deepcopy(config)
    mine["recipes"]["my-recipe"] = copy.deepcopy(mine["recipes"]["tiny-tulu2-dpo"])
    overrides = recipe_overrides(mine, "my-recipe")
    assert overrides["published_recipe"] is False
    assert override_summary(overrides) == "not a published recipe (defined by a --configfile)"
    assert override_summary(recipe_overrides(config, "tiny-tulu2-dpo")) is None


# ------------------------------------------------------------------------------------------- a killed, resumed run


@pytest.mark.slow
def test_killed_and_resumed_run_has_an_honest_card(tmp_path, make_tiny_tokenizer):
    """SIGKILL after the step-2 checkpoint, rerun: the card's train loss is the mean over all 6 steps (both
    attempts), the validation loss is computed at the end (no eval_steps), the wall time adds both attempts, and
    the killed attempt's `.sft.tmp-<pid>` is gone."""
    pytest.importorskip("trl")
    from tiny_models import build_tiny_llama

    model = build_tiny_llama(tmp_path / "tiny-llama", make_tiny_tokenizer(add_bos=True))
    config = load_config(REPO / "config.yaml")
    recipe = copy.deepcopy(config["recipes"]["tiny-tulu2-dpo"])
    recipe["stages"]["sft"].update(
        max_steps=6,
        max_seq_length=64,
        global_batch_size=4,
        micro_batch_size=2,
        warmup_ratio=0.0,
        warmup_steps=0,
        save_steps=2,
        eval_steps=None,
        budget_gpu_hours=None,
    )
    config["recipes"] = {"tiny-tulu2-dpo": recipe}
    (tmp_path / "config.json").write_text(json.dumps(config))
    rows = [
        {
            "id": f"r{i}",
            "source": "t",
            "messages": [
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"{i} + {i} = {2 * i}."},
            ],
        }
        for i in range(40)
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:32]))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[32:]))
    out, work = tmp_path / "results" / "sft", tmp_path / "work"
    argv = [
        sys.executable,
        str(REPO / "tests" / "train_probe.py"),
        "sft",
        "--config",
        str(tmp_path / "config.json"),
        "--recipe",
        "tiny-tulu2-dpo",
        "--model",
        str(model),
        "--train",
        str(tmp_path / "train.jsonl"),
        "--validation",
        str(tmp_path / "val.jsonl"),
        "--out",
        str(out),
        "--work",
        str(work),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(
        PROBE_SLEEP="1.0", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)
    )
    first = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (work / "checkpoint-2" / "trainer_state.json").exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (out.parent / f".sft.tmp-{first.pid}").is_dir()  # what a kill -9 leaves
    killed_time = json.loads((work / ATTEMPTS_FILE).read_text())["attempts"][0]["wall_time_s"]
    assert killed_time > 0

    subprocess.run(argv, env={**env, "PROBE_SLEEP": "0"}, cwd=REPO, check=True, timeout=600, stdout=subprocess.DEVNULL)
    assert not list(out.parent.glob(".sft.tmp-*")) and out.is_dir()  # the stale tmp dir was removed
    history = json.loads((out / "trainer_log.json").read_text())
    losses = [e["loss"] for e in history if "loss" in e]
    assert len(losses) == 6
    own = [e["train_loss"] for e in history if "train_loss" in e][-1]  # Trainer's: the last attempt only
    prov = json.loads((out / "provenance.json").read_text())
    mean = sum(losses) / 6
    assert prov["metrics"]["train_loss"] == pytest.approx(mean, rel=1e-9)
    assert abs(own - mean) > 1e-6  # the figure the card used to show
    evals = [e for e in history if "eval_loss" in e]
    assert [e["step"] for e in evals] == [6]  # evaluated at the end, without eval_steps
    card = (out / "README.md").read_text()
    assert f"| train loss (mean over all 6 logged steps, every attempt) | {mean:.4f} |" in card
    assert f"| validation loss (last evaluation, at the end of training) | {evals[0]['eval_loss']:.4f} |" in card
    # the default twin fine-tunes fully (issue 12): the card says so and has no adapter row
    assert "| method | full |" in card and "| LoRA |" not in card
    assert f"| learning rate | {recipe['stages']['sft']['learning_rate']:g} (" in card
    assert len(prov["attempts"]) == 2 and prov["attempts"][0]["wall_time_s"] >= killed_time
    assert prov["wall_time_s"] == pytest.approx(sum(a["wall_time_s"] for a in prov["attempts"]), abs=0.011)
