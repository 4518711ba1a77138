"""menagerie.verify / scripts/verify.py on a small synthetic results tree: clean passes, a tampered file fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from menagerie.io import sha256_file
from menagerie.provenance import file_hashes
from menagerie.verify import verify_recipe

REPO = Path(__file__).resolve().parents[1]


def build_tree(root: Path) -> Path:
    (root / "resources/datasets").mkdir(parents=True)
    (root / "resources/models/base").mkdir(parents=True)
    (root / "resources/models/base/model.safetensors").write_bytes(b"weights")
    raw = root / "resources/datasets/tiny-sft.jsonl"
    raw.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    recipe = root / "results/r"
    (recipe / "data").mkdir(parents=True)
    (recipe / "data/sft.jsonl").write_text('{"a": 1}\n{"a": 3}\n')
    (recipe / "data/sft_val.jsonl").write_text('{"a": 2}\n')
    report = {
        "sources": [{"dataset": "tiny-sft", "input_sha256": sha256_file(raw)}],
        "sha256": {
            "train": sha256_file(recipe / "data/sft.jsonl"),
            "validation": sha256_file(recipe / "data/sft_val.jsonl"),
        },
    }
    (recipe / "data/sft_report.json").write_text(json.dumps(report))
    (recipe / "sft").mkdir()
    (recipe / "sft/adapter_model.safetensors").write_bytes(b"adapter")
    inputs = {
        "model": root / "resources/models/base",
        "train": recipe / "data/sft.jsonl",
        "validation": recipe / "data/sft_val.jsonl",
    }
    (recipe / "sft/provenance.json").write_text(json.dumps({"stage": "sft", "input_sha256": file_hashes(inputs)}))
    (recipe / "sft_merged").mkdir()
    (recipe / "sft_merged/provenance.json").write_text(
        json.dumps(
            {"stage": "merge", "input_sha256": file_hashes({"adapter": recipe / "sft/adapter_model.safetensors"})}
        )
    )
    return recipe


def test_clean_tree_verifies(tmp_path):
    recipe = build_tree(tmp_path)
    checks = verify_recipe(recipe)
    assert len(checks) == 7 and all(c.status == "ok" for c in checks), checks
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts/verify.py"), str(recipe)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and "7/7 hashes match" in run.stdout


def test_tampered_files_fail(tmp_path):
    recipe = build_tree(tmp_path)
    (recipe / "data/sft.jsonl").write_text('{"a": 1}\n{"a": 4}\n')
    (tmp_path / "resources/models/base/model.safetensors").write_bytes(b"other weights")
    (recipe / "sft/adapter_model.safetensors").unlink()
    bad = {(Path(c.record).name, c.key, c.status) for c in verify_recipe(recipe) if c.status != "ok"}
    assert bad == {
        ("sft_report.json", "sha256.train", "mismatch"),
        ("provenance.json", "input_sha256.train", "mismatch"),
        ("provenance.json", "input_sha256.model", "mismatch"),
        ("provenance.json", "input_sha256.adapter", "missing"),
    }, bad
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts/verify.py"), str(recipe)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1 and "MISMATCH" in run.stderr


def test_the_shared_evaluations_eval_json_links_are_verified(tmp_path):
    """An evaluation lives under results/evals/<model key>/<suite hash>/ (shared by recipes); verify follows
    eval.json's `evaluations` links to its provenance and checks the model and eval data it read."""
    recipe = build_tree(tmp_path)
    evaluated = tmp_path / "results/evals/base@0a1b2c3d/0123456789abcdef"
    evaluated.mkdir(parents=True)
    (evaluated / "metrics.json").write_text("{}")
    data = tmp_path / "resources/datasets/tiny-eval.jsonl"
    data.write_text('{"question": "1 + 1?", "answer": "2"}\n')
    (evaluated / "metrics.provenance.json").write_text(
        json.dumps(
            {
                "stage": "evaluate",
                "model": "resources/models/base",
                "input_sha256": file_hashes({"model": tmp_path / "resources/models/base", "tiny-eval": data}),
            }
        )
    )
    link = {
        "path": "results/evals/base@0a1b2c3d/0123456789abcdef/metrics.json",
        "sha256": sha256_file(evaluated / "metrics.json"),
    }
    (recipe / "eval.json").write_text(json.dumps({"evaluations": {"base": link}}))
    checks = verify_recipe(recipe)
    linked = [c for c in checks if c.record.endswith("metrics.provenance.json")]
    assert {c.key for c in linked} == {"input_sha256.model", "input_sha256.tiny-eval"}
    assert all(c.status == "ok" for c in checks) and len(checks) == 9
    data.write_text('{"question": "1 + 1?", "answer": "3"}\n')
    assert [(c.key, c.status) for c in verify_recipe(recipe) if c.status != "ok"] == [
        ("input_sha256.tiny-eval", "mismatch")
    ]
