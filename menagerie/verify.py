"""Recompute the hashes of a built recipe's files against what its provenance recorded (`make verify RECIPE=...`).

Checked, under results/<recipe>/ (project root = its grandparent):
* data/<part>_report.json: `sha256.train` / `sha256.validation` against data/<part>.jsonl / <part>_val.jsonl, and each
  source's `input_sha256` against resources/datasets/<dataset>.jsonl;
* every stage's provenance.json (sft, dpo, *_merged) and the metrics.provenance.json of each shared evaluation
  eval.json links (`evaluations`, results/evals/<model key>/<suite hash>/): each `input_sha256` entry
  against the file or model directory it names (train/validation mixtures, adapters, model dirs — a directory hashes
  as in menagerie.provenance.file_hashes). A model input is matched against the candidate directories the DAG can
  feed (base model, sft, sft_merged, ...); entries whose file is absent are reported as missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from menagerie.provenance import file_hashes


@dataclass
class Check:
    record: str
    key: str
    status: str  # ok | mismatch | missing
    detail: str = ""


def _hash(path: Path) -> str | None:
    return file_hashes({"x": path}).get("x")


def _compare(checks: list, record: Path, key: str, expected: str, candidates: list[Path]) -> None:
    present = [c for c in candidates if c.exists()]
    if not present:
        checks.append(Check(str(record), key, "missing", " or ".join(map(str, candidates))))
        return
    for candidate in present:
        if _hash(candidate) == expected:
            checks.append(Check(str(record), key, "ok", str(candidate)))
            return
    checks.append(
        Check(
            str(record),
            key,
            "mismatch",
            f"recorded {expected[:12]}, now {', '.join(f'{c}={_hash(c)[:12]}' for c in present)}",
        )
    )


def _input_candidates(recipe_dir: Path, stage: str, name: str) -> list[Path]:
    data = recipe_dir / "data"
    part = "dpo" if stage.startswith("dpo") else "sft"
    if name == "train":
        return [data / f"{part}.jsonl"]
    if name == "validation":
        return [data / f"{part}_val.jsonl"]
    if name.startswith("adapter"):
        return [recipe_dir / part / "adapter_model.safetensors"]
    if name == "model":
        root = recipe_dir.parent.parent
        return [recipe_dir / d for d in ("sft_merged", "sft", "dpo_merged", "dpo")] + sorted(
            (root / "resources/models").glob("*")
        )
    return [recipe_dir.parent.parent / "resources/datasets" / f"{name}.jsonl"]  # eval data: dataset name


def _evaluation_records(recipe_dir: Path) -> list[Path]:
    """The provenance of each evaluation the recipe's eval.json links (none before its report is written)."""
    entry = recipe_dir / "eval.json"
    links = json.loads(entry.read_text()).get("evaluations") or {} if entry.is_file() else {}
    paths = [recipe_dir.parent.parent / link["path"] for link in links.values()]
    return [p.with_suffix(".provenance.json") for p in paths if p.with_suffix(".provenance.json").is_file()]


def verify_recipe(recipe_dir: str | Path) -> list[Check]:
    recipe_dir = Path(recipe_dir)
    root = recipe_dir.parent.parent
    checks: list[Check] = []
    for report_path in sorted((recipe_dir / "data").glob("*_report.json")):
        part = report_path.name.removesuffix("_report.json")
        report = json.loads(report_path.read_text())
        for split, suffix in (("train", ""), ("validation", "_val")):
            expected = report.get("sha256", {}).get(split)
            if expected:
                _compare(
                    checks, report_path, f"sha256.{split}", expected, [report_path.parent / f"{part}{suffix}.jsonl"]
                )
        for source in report.get("sources", []):
            if source.get("input_sha256"):
                _compare(
                    checks,
                    report_path,
                    f"sources.{source['dataset']}",
                    source["input_sha256"],
                    [root / "resources/datasets" / f"{source['dataset']}.jsonl"],
                )
    records = sorted(recipe_dir.glob("*/provenance.json")) + _evaluation_records(recipe_dir)
    for record_path in records:
        record = json.loads(record_path.read_text())
        stage = record_path.parent.name if record_path.name == "provenance.json" else "eval"
        for name, expected in (record.get("input_sha256") or {}).items():
            candidates = _input_candidates(recipe_dir, stage, name)
            if name == "model" and record.get("model"):
                candidates = [Path(record["model"]) if Path(record["model"]).is_absolute() else root / record["model"]]
            _compare(checks, record_path, f"input_sha256.{name}", expected, candidates)
    if not checks:
        checks.append(Check(str(recipe_dir), "-", "missing", "no provenance or mixture report found"))
    return checks
