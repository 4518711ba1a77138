"""Tests for menagerie.report (eval.json) and menagerie.leaderboard, with hand-made metrics. Fast and offline."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import pytest

from menagerie.config import load_config, recipe_hash
from menagerie.errors import MenagerieError
from menagerie.leaderboard import leaderboard_rows, render_markdown, write_leaderboard
from menagerie import schemas
from menagerie.report import build_eval_entry, compare, validate_eval

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(ROOT / "config.yaml")


def metrics(tasks: dict, **settings) -> dict:
    """A metrics.json as the evaluate stage writes it (menagerie.evaluate.run.evaluate_model)."""
    return {
        "recipe": "x",
        "which": "final",
        "model": "m",
        "backend": "vllm",
        "dtype": "float32",
        "batch_size": 16,
        "backend_settings": {"dtype": "float32", "seed": 1234, "enforce_eager": True},
        "library_versions": {"lm-eval": "0.4.13", "transformers": "5.19.0", "vllm": None},
        "seed": 1234,
        "chat_format": "tulu",
        "chat_template_sha256": "0" * 64,
        "tasks": tasks,
        **settings,
    }


def ok(value: float, stderr: float | None, n: int = 200, metric: str = "exact_match") -> dict:
    return {"status": "ok", "harness": "lm-eval", "metric": metric, "value": value, "stderr": stderr, "n": n}


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


@pytest.fixture
def tiny_final() -> dict:
    return metrics({"heldout_exact": ok(60.0, 3.5), "humaneval_pass1": skipped("no sandbox on this machine")})


@pytest.fixture
def tiny_base() -> dict:
    return metrics(
        {"heldout_exact": ok(22.0, 2.9), "humaneval_pass1": ok(12.5, 8.5, n=16, metric="pass@1")}, which="base"
    )


@pytest.fixture
def stage_files(tmp_path) -> dict[str, Path]:
    sft = tmp_path / "sft_provenance.json"
    sft.write_text(
        json.dumps(
            {
                "stage": "sft",
                "wall_time_s": 12.5,
                "input_sha256": {"train": "a" * 64},
                "environment": {"big": "dropped"},
            }
        )
    )
    data = tmp_path / "sft_report.json"
    data.write_text(json.dumps({"sha256": {"train": "b" * 64, "validation": "c" * 64}}))
    return {"sft": sft, "data.sft": data, "dpo": tmp_path / "missing.json"}


# ------------------------------------------------------------------------------------------- build_eval_entry


def test_entry_validates_and_compares_with_base(config, tiny_final, tiny_base, stage_files):
    entry = build_eval_entry(config, "tiny-tulu2-dpo", tiny_final, tiny_base, stage_files, "results/tiny-tulu2-dpo/dpo")
    jsonschema.validate(entry, schemas.load("eval.schema.json"))
    assert entry["schema_version"] == 1
    assert entry["recipe"] == "tiny-tulu2-dpo"
    assert entry["tiny"] is True
    assert entry["model"] == {"base": "smollm2-135m", "final": "results/tiny-tulu2-dpo/dpo"}

    task = entry["tasks"]["heldout_exact"]
    assert task["value"] == 60.0 and task["stderr"] == 3.5
    assert task["suite"] == "tiny" and entry["tasks"]["humaneval_pass1"]["suite"] == "tiny"
    assert task["base"] == tiny_base["tasks"]["heldout_exact"]
    assert task["delta_vs_base"] == pytest.approx(38.0)
    assert task["z_vs_base"] == pytest.approx(38.0 / math.sqrt(3.5**2 + 2.9**2))
    assert task["z_vs_base"] == pytest.approx(8.3602, abs=1e-3)  # sqrt(12.25 + 8.41) = 4.5453
    # the tiny twin has no published numbers
    assert task["published"] is None and task["delta_vs_published"] is None
    assert entry["published"] is None


def test_skipped_task_keeps_its_reason_and_is_not_averaged(config, tiny_final, tiny_base):
    entry = build_eval_entry(config, "tiny-tulu2-dpo", tiny_final, tiny_base, {}, "final")
    skipped_task = entry["tasks"]["humaneval_pass1"]
    assert skipped_task["status"] == "skipped"
    assert skipped_task["reason"] == "no sandbox on this machine"
    assert skipped_task["delta_vs_base"] is None and skipped_task["z_vs_base"] is None
    assert skipped_task["base"]["value"] == 12.5
    assert entry["average"] == pytest.approx(60.0)  # only the ok task
    assert entry["base"]["average"] == pytest.approx((22.0 + 12.5) / 2)
    assert entry["base"]["tasks"] == tiny_base["tasks"]


def test_average_is_null_when_everything_was_skipped(config):
    final = metrics({"heldout_exact": skipped("a"), "humaneval_pass1": skipped("b")})
    entry = build_eval_entry(config, "tiny-tulu2-dpo", final, None, {}, "final")
    assert entry["average"] is None
    assert entry["base"] is None
    assert all(t["base"] is None and t["delta_vs_base"] is None for t in entry["tasks"].values())


def test_no_stderr_means_no_z(config):
    final = metrics({"heldout_exact": ok(60.0, None), "humaneval_pass1": ok(10.0, 0.0, n=16, metric="pass@1")})
    base = metrics({"heldout_exact": ok(22.0, None), "humaneval_pass1": ok(5.0, 0.0, n=16, metric="pass@1")})
    entry = build_eval_entry(config, "tiny-tulu2-dpo", final, base, {}, "final")
    assert entry["tasks"]["heldout_exact"]["delta_vs_base"] == pytest.approx(38.0)
    assert entry["tasks"]["heldout_exact"]["z_vs_base"] is None
    assert entry["tasks"]["humaneval_pass1"]["delta_vs_base"] == pytest.approx(5.0)
    assert entry["tasks"]["humaneval_pass1"]["z_vs_base"] is None


def test_compare():
    assert compare(ok(60.0, 3.5), ok(22.0, 2.9)) == pytest.approx({"delta": 38.0, "z": 38.0 / math.hypot(3.5, 2.9)})
    assert compare(ok(1.0, 0.3), ok(2.0, 0.4)) == pytest.approx({"delta": -1.0, "z": -2.0})
    assert compare(ok(60.0, 3.5), None) is None
    assert compare(ok(60.0, 3.5), skipped("x")) is None
    assert compare(skipped("x"), ok(60.0, 3.5)) is None


def test_provenance(config, tiny_final, tiny_base, stage_files):
    entry = build_eval_entry(config, "tiny-tulu2-dpo", tiny_final, tiny_base, stage_files, "final")
    prov = entry["provenance"]
    assert prov["config_hash"] == recipe_hash(config, "tiny-tulu2-dpo")
    assert prov["wall_time_s"] == {"sft": 12.5}
    assert prov["data_sha256"] == {"sft:train": "a" * 64, "data.sft:train": "b" * 64, "data.sft:validation": "c" * 64}
    assert set(prov["stages"]) == {"sft", "data.sft"}  # the missing file is left out
    assert "environment" not in prov["stages"]["sft"]
    assert prov["eval_settings"] == {
        "backend": "vllm",
        "dtype": "float32",
        "batch_size": 16,
        "chat_format": "tulu",
        "chat_template_sha256": "0" * 64,
        "seed": 1234,
        "fewshot_seed": 1234,
        "backend_settings": {"dtype": "float32", "seed": 1234, "enforce_eager": True},
        "library_versions": {"lm-eval": "0.4.13", "transformers": "5.19.0", "vllm": None},
        "judge_protocols": {},
    }  # no judged task in the tiny suite
    assert prov["seeds"]["eval"] == config["recipes"]["tiny-tulu2-dpo"]["eval"]["seed"]
    assert {"eval", "sft", "dpo", "data.sft", "data.dpo"} <= set(prov["seeds"])
    assert isinstance(prov["git_commit"], str) and prov["packages"]


def test_delta_vs_published(config):
    """tulu2-dpo-7b: [T2] Table 1 reports MMLU 50.7; the other tasks were skipped (no hub here)."""
    suites = [t["name"] for t in config["suites"]["tulu2"]]
    tasks = {name: skipped("lm-eval task could not run here") for name in suites}
    tasks["mmlu_0shot"] = ok(48.2, 0.4, n=14042, metric="acc")
    final = metrics(tasks, backend="vllm", dtype="bfloat16", chat_format="tulu")
    entry = build_eval_entry(config, "tulu2-dpo-7b", final, None, {}, "results/tulu2-dpo-7b/dpo")
    mmlu = entry["tasks"]["mmlu_0shot"]
    assert mmlu["published"] == 50.7
    assert mmlu["delta_vs_published"] == pytest.approx(48.2 - 50.7)
    gsm = entry["tasks"]["gsm8k_cot_8shot"]
    assert gsm["published"] == 34.5  # the paper's number is shown even for a skipped task
    assert gsm["delta_vs_published"] is None
    assert gsm["reason"] == "lm-eval task could not run here"
    assert entry["published"]["source"] == "[T2] Table 1"
    assert entry["published"]["metrics"]["mmlu"] == 50.7
    assert entry["average"] == pytest.approx(48.2)
    # Δpaper is taken on the paper's Avg (7) only, and only once all 7 tasks ran: here 6 are missing
    assert entry["published"]["average_delta"] is None
    assert entry["average_as_published"]["value"] is None and entry["average_as_published"]["published"] == 56.3
    assert [m["task"] for m in entry["average_as_published"]["missing"]] == [
        "gsm8k_cot_8shot",
        "bbh_cot_3shot",
        "tydiqa_goldp_1shot",
        "codex_humaneval_pass10",
        "alpaca_eval",
        "toxigen",
    ]
    assert entry["model"] == {"base": "llama-2-7b", "final": "results/tulu2-dpo-7b/dpo"}


def test_invalid_entry_names_the_key(config, tiny_base):
    broken = ok(60.0, 3.5)
    del broken["stderr"]
    final = metrics({"heldout_exact": broken, "humaneval_pass1": skipped("x")})
    with pytest.raises(MenagerieError) as info:
        build_eval_entry(config, "tiny-tulu2-dpo", final, tiny_base, {}, "final")
    message = str(info.value)
    assert "results/tiny-tulu2-dpo/eval.json" in message
    assert "tasks.heldout_exact" in message
    assert "stderr" in message
    assert "\n" not in message


def test_skipped_task_without_reason_is_invalid(config, tiny_final, tiny_base):
    entry = build_eval_entry(config, "tiny-tulu2-dpo", tiny_final, tiny_base, {}, "final")
    del entry["tasks"]["humaneval_pass1"]["reason"]
    with pytest.raises(MenagerieError, match=r"tasks\.humaneval_pass1.*reason"):
        validate_eval(entry, "x/eval.json")


# ------------------------------------------------------------------------------------------- leaderboard


def write_entry(path: Path, entry: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry))
    return path


@pytest.fixture
def two_evals(config, tmp_path, tiny_final, tiny_base) -> list[Path]:
    low = build_eval_entry(config, "tiny-tulu2-dpo", tiny_final, tiny_base, {}, "results/tiny-tulu2-dpo/dpo")
    high_final = metrics({"heldout_exact": ok(75.0, 3.0), "humaneval_pass1": ok(12.5, 8.5, n=16, metric="pass@1")})
    high = build_eval_entry(config, "tiny-platypus2", high_final, None, {}, "results/tiny-platypus2/sft_merged")
    # written in an order that differs from the ranking: tiny-platypus2 averages 43.75, tiny-tulu2-dpo 60
    return [
        write_entry(tmp_path / "results/tiny-platypus2/eval.json", high),
        write_entry(tmp_path / "results/tiny-tulu2-dpo/eval.json", low),
    ]


def test_write_leaderboard(two_evals, tmp_path):
    json_out, md_out = tmp_path / "results/leaderboard.json", tmp_path / "results/leaderboard.md"
    rows = write_leaderboard(two_evals, json_out, md_out)
    board = json.loads(json_out.read_text())
    assert board["schema_version"] == 1
    assert board["rows"] == json.loads(json.dumps(rows))
    assert [r["recipe"] for r in board["rows"]] == ["tiny-tulu2-dpo", "tiny-platypus2"]
    averages = [r["average"] for r in board["rows"]]
    assert averages == sorted(averages, reverse=True)
    assert averages == [60.0, 43.8]  # (75.0 + 12.5) / 2 = 43.75, rounded half up
    top = board["rows"][0]
    assert top["base_average"] == 17.3  # (22.0 + 12.5) / 2 = 17.25, rounded half up
    assert top["tasks"]["heldout_exact"]["delta_vs_base"] == pytest.approx(38.0)
    assert top["tasks"]["humaneval_pass1"]["status"] == "skipped"
    assert top["tasks"]["humaneval_pass1"]["reason"] == "no sandbox on this machine"
    assert board["rows"][1]["base_average"] is None

    md = md_out.read_text()
    table_rows = [line for line in md.splitlines() if line.startswith("| [")]
    assert len(table_rows) == 2
    assert "tiny-tulu2-dpo" in table_rows[0] and "tiny-platypus2" in table_rows[1]
    header = next(line for line in md.splitlines() if line.startswith("| recipe"))
    assert header.count("|") == table_rows[0].count("|") == table_rows[1].count("|")
    assert "skipped" in table_rows[0]
    assert "Δbase +38.0" in table_rows[0]
    assert not list(tmp_path.glob("results/.*tmp*"))  # atomic writes leave no temporaries


def test_leaderboard_null_average_sorts_last(config, tmp_path, two_evals):
    empty = build_eval_entry(
        config,
        "tiny-birbal",
        metrics({"heldout_exact": skipped("a"), "humaneval_pass1": skipped("b")}),
        None,
        {},
        "final",
    )
    files = [write_entry(tmp_path / "results/tiny-birbal/eval.json", empty), *two_evals]
    rows = leaderboard_rows(files)
    assert [r["recipe"] for r in rows] == ["tiny-tulu2-dpo", "tiny-platypus2", "tiny-birbal"]
    md = render_markdown(rows)
    assert sum(line.startswith("| [") for line in md.splitlines()) == 3


def test_leaderboard_rejects_an_invalid_eval_json(tmp_path, two_evals):
    entry = json.loads(two_evals[0].read_text())
    bad = copy.deepcopy(entry)
    del bad["provenance"]
    path = write_entry(tmp_path / "results/broken/eval.json", bad)
    with pytest.raises(MenagerieError, match="provenance"):
        leaderboard_rows([path, *two_evals])
