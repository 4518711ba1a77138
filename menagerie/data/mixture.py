"""Build a recipe's training mixture (data.sft / data.dpo) from materialized raw dataset files.

Per source (a mixture item): the dataset's rows are normalized to canonical rows (menagerie.data.loaders); an
item may select rows by their `origin` (`origins` keeps rows whose origin matches one of the patterns,
`exclude_origins` drops them — how a recipe takes one subset of a released mix, or leaves out LLM-generated
rows); the recipe's per-row filters (`filters`, Birbal: menagerie.data.filters) drop rows; then `count` rows
(or `fraction`, or all) are sampled without replacement with the item's own `random.Random(f"{seed}:{dataset}")`
(the selection is added to the key when an item selects origins), so changing one source's size leaves the
others' samples unchanged. Items of one dataset must select disjoint rows.

Then, on the concatenation: input dedup (filters.dedup_input), Platypus curation (`curation`), a shuffle with
`random.Random(seed)`, and the last `validation` rows become the validation split. The same inputs always give
byte-identical splits. The report records, per source, what was requested (and the paper's count, `paper_count`)
and obtained, rows dropped by each filter, word-length statistics and the sha256 of every input and output.
"""

from __future__ import annotations

import json
import random
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from menagerie.data.filters import dedup_inputs, row_filters
from menagerie.data.sources import PREFERENCE_SCHEMAS, SFT_SCHEMAS, normalize, read_located
from menagerie.errors import ConfigError
from menagerie.io import jsonl_sha256, sha256_file

KIND_SCHEMAS = {"sft": SFT_SCHEMAS, "dpo": PREFERENCE_SCHEMAS}
LENGTH_UNIT = "words"   # whitespace-separated; the mixture stage has no tokenizer (token counts: the train stage)


def rendered_chars(row: dict) -> int:
    """Length of the text a row contributes: all message contents, context, chosen and rejected."""
    total = sum(len(m["content"]) for m in row.get("messages", []))
    return total + sum(len(row.get(key, "")) for key in ("context", "chosen", "rejected"))


def prompt_and_response(row: dict) -> tuple[str, str]:
    """The text a row conditions on (non-assistant messages, context) and the text it trains (replies / chosen)."""
    prompt = [m["content"] for m in row.get("messages", []) if m["role"] != "assistant"] + [row.get("context", "")]
    response = [m["content"] for m in row.get("messages", []) if m["role"] == "assistant"] + [row.get("chosen", "")]
    return "\n".join(prompt), "\n".join(response)


def _stats(values: list[int]) -> dict:
    return {"mean": round(sum(values) / len(values), 1) if values else 0.0, "max": max(values, default=0),
            "total": sum(values)}


def length_stats(rows: list[dict]) -> dict:
    """Word counts (whitespace-split) of the prompts and responses of `rows`."""
    pairs = [prompt_and_response(row) for row in rows]
    return {"prompt": _stats([len(p.split()) for p, _ in pairs]),
            "response": _stats([len(r.split()) for _, r in pairs])}


def _selection(item: dict) -> dict:
    return {key: item[key] for key in ("origins", "exclude_origins") if item.get(key)}


def _matches(origin: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(origin, pattern) for pattern in patterns)


def _select(rows: list[dict], item: dict) -> list[int]:
    """Indices of the rows the item's origin selection keeps (all rows when it selects none)."""
    keep, drop = item.get("origins"), item.get("exclude_origins")
    return [i for i, row in enumerate(rows)
            if (not keep or _matches(row.get("origin", ""), keep))
            and not (drop and _matches(row.get("origin", ""), drop))]


def _take(eligible: list[dict], item: dict, kind: str, seed: int, where: str) -> tuple[list[dict], int | str]:
    """Sample the rows one mixture source asks for; returns (rows, what was requested)."""
    name, available = item["dataset"], len(eligible)
    if "count" in item and item["count"] is not None:
        requested: int | str = item["count"]
        wanted = item["count"]
        if wanted > available:
            narrowed = " after its origin selection and the recipe's filters" if _selection(item) else ""
            raise ConfigError(f"data.{kind}: source '{name}' requests {wanted} rows but dataset '{name}' has only "
                              f"{available}{narrowed}; lower `count` or use `fraction` ({where})")
    elif "fraction" in item and item["fraction"] is not None:
        requested = f"fraction {item['fraction']}"
        wanted = min(available, max(1, round(item["fraction"] * available))) if available else 0
    else:
        requested, wanted = "all", available
    key = f"{seed}:{name}" + (f":{json.dumps(_selection(item), sort_keys=True)}" if _selection(item) else "")
    order = random.Random(key).sample(range(available), wanted)
    return [eligible[i] for i in order], requested


def build_mixture(mixture: dict, datasets_cfg: dict, raw_paths: dict[str, Path],
                  kind: str) -> tuple[list[dict], list[dict], dict]:
    """Return (train_rows, validation_rows, report) for a resolved `data.sft` or `data.dpo` entry.

    `raw_paths` maps each source dataset to the jsonl file of its raw rows; `kind` is "sft" or "dpo".
    """
    if kind not in KIND_SCHEMAS:
        raise ConfigError(f"mixture kind must be one of {', '.join(KIND_SCHEMAS)}, got {kind!r}")
    seed, validation = mixture.get("seed", 42), mixture.get("validation", 0)
    filters = mixture.get("filters") or {}
    if filters and kind != "sft":
        raise ConfigError(f"data.{kind}.filters: the Birbal filters apply to sft mixtures only")
    loaded: dict[str, tuple[list[dict], str]] = {}     # dataset -> (canonical rows, sha256 of the raw file)
    claimed: dict[str, dict[int, int]] = {}            # dataset -> {row index: position of the item that took it}
    combined: list[dict] = []
    position_of: dict[int, int] = {}                    # id(row) -> item position, for per-source obtained counts
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
        if name not in loaded:
            path = Path(raw_paths[name])
            raw, locations = read_located(path)
            loaded[name] = (normalize(raw, schema, name, str(path), locations), sha256_file(path))
        rows, digest = loaded[name]
        indices = _select(rows, item)
        if _selection(item) and not indices:
            raise ConfigError(f"{where}: no row of dataset '{name}' has an origin selected by {_selection(item)} "
                              f"(origins present: {', '.join(sorted({r.get('origin', '') for r in rows})[:12])})")
        taken = claimed.setdefault(name, {})
        overlap = [taken[i] for i in indices if i in taken]
        if overlap:
            raise ConfigError(f"{where}: selects rows of dataset '{name}' that data.{kind}.sources.{overlap[0]} "
                              f"also selects; give items of one dataset disjoint `origins`")
        taken.update({i: position for i in indices})
        eligible, dropped = row_filters([rows[i] for i in indices], filters) if filters else (
            [rows[i] for i in indices], {})
        picked, requested = _take(eligible, item, kind, seed, where)
        position_of.update({id(row): position for row in picked})
        combined.extend(picked)
        entry: dict[str, Any] = {"dataset": name, **_selection(item), "requested": requested}
        if item.get("paper_count") is not None:
            entry["paper_count"] = item["paper_count"]
        entry.update({"available": len(rows), "origin_excluded": len(rows) - len(indices)} if _selection(item)
                     else {"available": len(rows)})
        if filters:
            entry["filtered_out"] = dropped
        entry.update({"sampled": len(picked), "input_sha256": digest})
        sources.append(entry)
    summary: dict[str, Any] = {}
    if filters:
        summary = {"settings": {k: filters[k] for k in sorted(filters)}, "word_unit": "whitespace-split words",
                   "origin_excluded": sum(s.get("origin_excluded", 0) for s in sources)}
        for key in ("max_prompt_words", "min_input_words"):
            if filters.get(key):
                summary[key] = {"limit": filters[key],
                                "dropped": sum(s["filtered_out"].get(key, 0) for s in sources)}
        if filters.get("dedup_input"):
            before = len(combined)
            combined = dedup_inputs(combined)
            summary["dedup_input"] = {"dropped": before - len(combined)}
    curation = None
    if mixture.get("curation"):   # Platypus: exact + near-duplicate removal before the split
        from menagerie.data.curation import curate

        combined, curation = curate(combined, mixture["curation"])
    obtained = [0] * len(sources)
    for row in combined:
        obtained[position_of[id(row)]] += 1
    for entry, count, position in zip(sources, obtained, range(len(sources))):
        entry["obtained"] = count
        entry["length"] = length_stats([row for row in combined if position_of[id(row)] == position])
    random.Random(seed).shuffle(combined)
    if not combined:
        raise ConfigError(f"data.{kind}: the mixture's sources provide no rows")
    if validation >= len(combined):
        raise ConfigError(f"data.{kind}.validation ({validation}) must be smaller than the {len(combined)} rows "
                          "the mixture provides")
    cut = len(combined) - validation
    train, val = combined[:cut], combined[cut:]
    lengths = [rendered_chars(row) for row in combined]
    # rows of a dataset that items select by origin but no item took: shows a misspelt or unexpected origin
    unselected = {name: len(rows) - len(claimed[name]) for name, (rows, _) in loaded.items()
                  if any(_selection(item) for item in mixture["sources"] if item["dataset"] == name)}
    report = {
        "kind": kind,
        "seed": seed,
        "sources": sources,
        "train_rows": len(train),
        "validation_rows": len(val),
        "input_sha256": {name: digest for name, (_, digest) in loaded.items()},
        **({"unselected_rows": unselected} if unselected else {}),
        "sha256": {"train": jsonl_sha256(train), "validation": jsonl_sha256(val)},
        "chars": {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)},
        "length": {"unit": LENGTH_UNIT, "tokenizer": None, **length_stats(combined)},
        **({"filters": summary} if summary else {}),
        **({"curation": curation} if curation else {}),
    }
    return train, val, report
