"""One real Snakemake run of a tiny twin at reduced size: every stage runs (GGUF conversion, data, LoRA SFT, DPO,
merges, lm-eval + HumanEval on final and base models, eval.json, leaderboard)."""

from __future__ import annotations

import json
import subprocess

import pytest

from menagerie.io import sha256_file
from menagerie.report import validate_eval


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tiny_twin_end_to_end(built_twin):
    """The build itself is the session's tiny_twin (tests/e2e/conftest.py); its outputs are checked here."""
    work, env, cmd = built_twin.work, built_twin.env, built_twin.command

    results = work / "results" / "tiny-e2e"
    entry = json.loads((results / "eval.json").read_text())
    validate_eval(entry)
    assert entry["recipe"] == "tiny-e2e" and entry["model"]["final"] == "results/tiny-e2e/dpo_merged"
    for name in ("heldout_exact", "humaneval_pass1"):
        task = entry["tasks"][name]
        assert task["status"] == "ok" and task["n"] == {"heldout_exact": 24, "humaneval_pass1": 2}[name]
        assert task["base"]["status"] == "ok"
    assert entry["tasks"]["heldout_exact"]["stderr"] is not None
    assert set(entry["provenance"]["wall_time_s"]) >= {"sft", "dpo", "merge.sft", "merge.dpo", "evaluate.final"}
    assert entry["provenance"]["data_sha256"]

    # every model directory is a loadable HF model (weights + tokenizer + card); adapters are peft adapters
    for stage in ("sft", "dpo"):
        assert (results / stage / "adapter_config.json").exists()
        assert (results / stage / "loss_curve.png").exists()
    for model_dir in (results / "sft_merged", results / "dpo_merged", work / "resources/models/smollm2-135m"):
        assert (model_dir / "model.safetensors").exists() and (model_dir / "README.md").exists()
        assert (model_dir / "tokenizer.json").exists()
    chat_template = json.loads((results / "dpo_merged" / "tokenizer_config.json").read_text()).get("chat_template") \
        or (results / "dpo_merged" / "chat_template.jinja").read_text()
    assert "<|assistant|>" in chat_template

    board = json.loads((work / "results" / "leaderboard.json").read_text())
    assert [row["recipe"] for row in board["rows"]] == ["tiny-e2e"]
    assert "tiny-e2e" in (work / "results" / "leaderboard.md").read_text()
    assert 'data-recipe="tiny-e2e"' in (work / "results" / "leaderboard.html").read_text()
    assert [p.name for p in (work / "results" / "leaderboard").glob("*.png")] == ["tiny-e2e.png"]
    # DPO is compared with the SFT model it started from (Δsft), and its rewards on the validation pairs reported
    assert entry["model"]["start"] == "results/tiny-e2e/sft_merged"
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
