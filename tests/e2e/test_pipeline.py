"""One real Snakemake run of the default tiny twin at reduced size: every stage runs (GGUF conversion, data, full SFT,
full DPO — Tulu 2's method, so no merge —, lm-eval + HumanEval on final, start and base models, eval.json,
leaderboard)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from menagerie.io import sha256_file
from menagerie.report import validate_eval


def unchanged_tensors(before: Path, after: Path) -> list[str]:
    """Names of the tensors two safetensors files hold with equal values (both must hold the same names)."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(before)), load_file(str(after))
    assert a.keys() == b.keys()
    return [name for name in a if torch.equal(a[name], b[name])]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tiny_twin_end_to_end(built_twin):
    """The build itself is the session's tiny_twin (tests/e2e/conftest.py); its outputs are checked here."""
    work, env, cmd = built_twin.work, built_twin.env, built_twin.command

    results = work / "results" / "tiny-e2e"
    entry = json.loads((results / "eval.json").read_text())
    validate_eval(entry)
    assert entry["recipe"] == "tiny-e2e" and entry["model"]["final"] == "results/tiny-e2e/dpo"
    for name in ("heldout_exact", "humaneval_pass1"):
        task = entry["tasks"][name]
        assert task["status"] == "ok" and task["n"] == {"heldout_exact": 24, "humaneval_pass1": 2}[name]
        assert task["base"]["status"] == "ok"
    assert entry["tasks"]["heldout_exact"]["stderr"] is not None
    wall = entry["provenance"]["wall_time_s"]
    assert set(wall) >= {"sft", "dpo", "evaluate.final"} and not [k for k in wall if k.startswith("merge")]
    assert entry["provenance"]["data_sha256"]

    # full fine-tuning: each stage directory is a whole HF model (weights + tokenizer + card), no adapter, no merge
    base_dir = work / "resources/models/smollm2-135m"
    for model_dir in (results / "sft", results / "dpo", base_dir):
        assert (model_dir / "model.safetensors").exists() and (model_dir / "README.md").exists()
        assert (model_dir / "tokenizer.json").exists()
    assert not list(results.glob("*_merged")) and not list(results.rglob("adapter_config.json"))
    for stage, start in (("sft", base_dir), ("dpo", results / "sft")):
        record = json.loads((results / stage / "provenance.json").read_text())
        assert record["method"] == "full" and record["metrics"]["global_step"] == {"sft": 3, "dpo": 2}[stage]
        assert [r["trainable_parameter_dtypes"] for r in record["rank_memory"]] == [["float32"]]  # fp32 master
        assert (results / stage / "loss_curve.png").exists()
        losses = [e["loss"] for e in json.loads((results / stage / "trainer_log.json").read_text()) if "loss" in e]
        assert len(losses) == record["metrics"]["global_step"] and all(math.isfinite(x) for x in losses)
        # every weight tensor moved: the whole model trains, not an adapter
        assert unchanged_tensors(start / "model.safetensors", results / stage / "model.safetensors") == []
    chat_template = (
        json.loads((results / "dpo" / "tokenizer_config.json").read_text()).get("chat_template")
        or (results / "dpo" / "chat_template.jinja").read_text()
    )
    assert "<|assistant|>" in chat_template

    board = json.loads((work / "results" / "leaderboard.json").read_text())
    assert [row["recipe"] for row in board["rows"]] == ["tiny-e2e"]
    assert "tiny-e2e" in (work / "results" / "leaderboard.md").read_text()
    assert 'data-recipe="tiny-e2e"' in (work / "results" / "leaderboard.html").read_text()
    assert [p.name for p in (work / "results" / "leaderboard").glob("*.png")] == ["tiny-e2e.png"]
    # DPO is compared with the SFT model it started from (Δsft), and its rewards on the validation pairs reported
    assert entry["model"]["start"] == "results/tiny-e2e/sft"
    assert entry["start"]["tasks"]["heldout_exact"]["status"] == "ok"
    assert "delta_vs_start" in entry["tasks"]["heldout_exact"]
    assert entry["dpo"]["validation"]["reward_accuracy"] is not None
    # each evaluated model's shared evaluation (results/evals/<model key>/<suite hash>/), linked with its sha256,
    # and lm-eval's own results file beside it
    assert set(entry["evaluations"]) == {"final", "base", "start"}
    for link in entry["evaluations"].values():
        metrics = work / link["path"]
        assert metrics.parent.parent.parent == work / "results" / "evals" and sha256_file(metrics) == link["sha256"]
        assert len(list((metrics.parent / "lm_eval").glob("*/results_*.json"))) == 1
    leftovers = [p for p in (work / "results").rglob(".*tmp-*")]
    assert not leftovers, leftovers

    # a second run has nothing to do: outputs are complete and up to date
    again = subprocess.run([*cmd, "-n"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
