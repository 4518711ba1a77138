"""Build a recipe's training mixture (data.sft / data.dpo) from materialized raw dataset files.

Each source is normalized to canonical rows and sampled without replacement with its own
`random.Random(f"{seed}:{dataset}")` (so changing one source's size leaves the others' samples
unchanged); the concatenation is shuffled with `random.Random(seed)` and its last `validation`
rows become the validation split. The same inputs always give byte-identical splits.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from menagerie.data.sources import PREFERENCE_SCHEMAS, SFT_SCHEMAS, normalize, read_rows
from menagerie.errors import ConfigError
from menagerie.io import jsonl_sha256, sha256_file

KIND_SCHEMAS = {"sft": SFT_SCHEMAS, "dpo": PREFERENCE_SCHEMAS}


def rendered_chars(row: dict) -> int:
    """Length of the text a row contributes: all message contents, context, chosen and rejected."""
    total = sum(len(m["content"]) for m in row.get("messages", []))
    return total + sum(len(row.get(key, "")) for key in ("context", "chosen", "rejected"))


def _take(rows: list[dict], item: dict, kind: str, seed: int) -> tuple[list[dict], int | str]:
    """Sample the rows one mixture source asks for; returns (rows, what was requested)."""
    name, available = item["dataset"], len(rows)
    if "count" in item and item["count"] is not None:
        requested: int | str = item["count"]
        wanted = item["count"]
        if wanted > available:
            raise ConfigError(f"data.{kind}: source '{name}' requests {wanted} rows but dataset '{name}' has only "
                              f"{available}; lower `count` or use `fraction`")
    elif "fraction" in item and item["fraction"] is not None:
        requested = f"fraction {item['fraction']}"
        wanted = min(available, max(1, round(item["fraction"] * available))) if available else 0
    else:
        requested, wanted = "all", available
    order = random.Random(f"{seed}:{name}").sample(range(available), wanted)
    return [rows[i] for i in order], requested


def build_mixture(mixture: dict, datasets_cfg: dict, raw_paths: dict[str, Path],
                  kind: str) -> tuple[list[dict], list[dict], dict]:
    """Return (train_rows, validation_rows, report) for a resolved `data.sft` or `data.dpo` entry.

    `raw_paths` maps each source dataset to the jsonl file of its raw rows; `kind` is "sft" or "dpo".
    """
    if kind not in KIND_SCHEMAS:
        raise ConfigError(f"mixture kind must be one of {', '.join(KIND_SCHEMAS)}, got {kind!r}")
    seed, validation = mixture.get("seed", 42), mixture.get("validation", 0)
    combined: list[dict] = []
    sources: list[dict[str, Any]] = []
    for position, item in enumerate(mixture["sources"]):
        name = item["dataset"]
        where = f"data.{kind}.sources.{position}"
        if name not in datasets_cfg:
            raise ConfigError(f"{where}: dataset '{name}' is not defined in datasets")
        schema = datasets_cfg[name]["schema"]
        if schema not in KIND_SCHEMAS[kind]:
            raise ConfigError(f"{where}: dataset '{name}' has schema {schema}, but a {kind} mixture needs "
                              f"{' or '.join(KIND_SCHEMAS[kind])}")
        if name not in raw_paths:
            raise ConfigError(f"{where}: no raw file was given for dataset '{name}'")
        path = Path(raw_paths[name])
        rows = normalize(read_rows(path), schema, name, str(path))
        picked, requested = _take(rows, item, kind, seed)
        combined.extend(picked)
        sources.append({"dataset": name, "requested": requested, "obtained": len(picked),
                        "input_sha256": sha256_file(path)})
    curation = None
    if mixture.get("curation"):   # Platypus: exact + near-duplicate removal before the split
        from menagerie.data.curation import curate

        combined, curation = curate(combined, mixture["curation"])
    random.Random(seed).shuffle(combined)
    if not combined:
        raise ConfigError(f"data.{kind}: the mixture's sources provide no rows")
    if validation >= len(combined):
        raise ConfigError(f"data.{kind}.validation ({validation}) must be smaller than the {len(combined)} rows "
                          "the mixture provides")
    cut = len(combined) - validation
    train, val = combined[:cut], combined[cut:]
    lengths = [rendered_chars(row) for row in combined]
    report = {
        "kind": kind,
        "seed": seed,
        "sources": sources,
        "train_rows": len(train),
        "validation_rows": len(val),
        "sha256": {"train": jsonl_sha256(train), "validation": jsonl_sha256(val)},
        "chars": {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)},
        **({"curation": curation} if curation else {}),
    }
    return train, val, report
