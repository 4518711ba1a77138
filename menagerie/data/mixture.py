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

build_mixture is that pipeline of named steps, each a function of what the previous one returns:
select (load, origin selection) -> filter (per-row filters) -> sample (each source's draw) -> curate (duplicate
removal across the mixture) -> split (shuffle, validation rows) -> report.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from menagerie.data.curation import curate as curate_rows
from menagerie.data.filters import dedup_inputs, row_filters
from menagerie.data.sources import PREFERENCE_SCHEMAS, SFT_SCHEMAS, normalize, read_located
from menagerie.errors import ConfigError
from menagerie.io import jsonl_sha256, sha256_file

KIND_SCHEMAS = {"sft": SFT_SCHEMAS, "dpo": PREFERENCE_SCHEMAS}
LENGTH_UNIT = "words"  # whitespace-separated; the mixture stage has no tokenizer (token counts: the train stage)


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
    return {
        "mean": round(sum(values) / len(values), 1) if values else 0.0,
        "max": max(values, default=0),
        "total": sum(values),
    }


def length_stats(rows: list[dict]) -> dict:
    """Word counts (whitespace-split) of the prompts and responses of `rows`."""
    pairs = [prompt_and_response(row) for row in rows]
    return {
        "prompt": _stats([len(p.split()) for p, _ in pairs]),
        "response": _stats([len(r.split()) for _, r in pairs]),
    }


def _selection(item: dict) -> dict:
    return {key: item[key] for key in ("origins", "exclude_origins") if item.get(key)}


def _matches(origin: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(origin, pattern) for pattern in patterns)


def _select(rows: list[dict], item: dict) -> list[int]:
    """Indices of the rows the item's origin selection keeps (all rows when it selects none)."""
    keep, drop = item.get("origins"), item.get("exclude_origins")
    return [
        i
        for i, row in enumerate(rows)
        if (not keep or _matches(row.get("origin", ""), keep)) and not (drop and _matches(row.get("origin", ""), drop))
    ]


def _take(eligible: list[dict], item: dict, kind: str, seed: int, where: str) -> tuple[list[dict], int | str]:
    """Sample the rows one mixture source asks for; returns (rows, what was requested)."""
    name, available = item["dataset"], len(eligible)
    if "count" in item and item["count"] is not None:
        requested: int | str = item["count"]
        wanted = item["count"]
        if wanted > available:
            narrowed = " after its origin selection and the recipe's filters" if _selection(item) else ""
            raise ConfigError(
                f"data.{kind}: source '{name}' requests {wanted} rows but dataset '{name}' has only "
                f"{available}{narrowed}; lower `count` or use `fraction` ({where})"
            )
    elif "fraction" in item and item["fraction"] is not None:
        requested = f"fraction {item['fraction']}"
        wanted = min(available, max(1, round(item["fraction"] * available))) if available else 0
    else:
        requested, wanted = "all", available
    key = f"{seed}:{name}" + (f":{json.dumps(_selection(item), sort_keys=True)}" if _selection(item) else "")
    order = random.Random(key).sample(range(available), wanted)
    return [eligible[i] for i in order], requested


@dataclass
class Dataset:
    """A source dataset's canonical rows, the sha256 of its raw file and which item selected each row."""

    rows: list[dict]
    digest: str
    claimed: dict[int, int] = field(default_factory=dict)  # row index -> position of the item that selected it


@dataclass
class Source:
    """One mixture item (data.<kind>.sources.<position>) through the steps; each step fills its fields."""

    position: int
    item: dict
    where: str
    available: int  # rows of its dataset
    selected: list[dict]  # select: the rows its origin selection keeps
    eligible: list[dict] = field(default_factory=list)  # filter: those the per-row filters keep
    filtered_out: dict[str, int] = field(default_factory=dict)
    picked: list[dict] = field(default_factory=list)  # sample: its draw
    requested: int | str = "all"


@dataclass
class Curated:
    """The concatenated draws after the mixture-wide duplicate removal, and what each removal dropped."""

    rows: list[dict]
    dedup_dropped: int | None = None  # filters.dedup_input (Birbal)
    curation: dict | None = None  # `curation` (Platypus)


def mixture_settings(mixture: dict, kind: str) -> tuple[int, int, dict]:
    """(seed, validation rows, per-row filters) of a `data.<kind>` entry; checks the kind and where filters apply."""
    if kind not in KIND_SCHEMAS:
        raise ConfigError(f"mixture kind must be one of {', '.join(KIND_SCHEMAS)}, got {kind!r}")
    filters = mixture.get("filters") or {}
    if filters and kind != "sft":
        raise ConfigError(f"data.{kind}.filters: the Birbal filters apply to sft mixtures only")
    return mixture.get("seed", 42), mixture.get("validation", 0), filters


def _check_source(item: dict, where: str, datasets_cfg: dict, raw_paths: dict, kind: str) -> str:
    """The item's dataset schema, once the dataset is defined, fits the mixture kind and has a raw file."""
    name = item["dataset"]
    if name not in datasets_cfg:
        raise ConfigError(f"{where}: dataset '{name}' is not defined in datasets")
    schema = datasets_cfg[name]["schema"]
    if schema not in KIND_SCHEMAS[kind]:
        raise ConfigError(
            f"{where}: dataset '{name}' has schema {schema}, but a {kind} mixture needs "
            f"{' or '.join(KIND_SCHEMAS[kind])}"
        )
    if name not in raw_paths:
        raise ConfigError(f"{where}: no raw file was given for dataset '{name}'")
    return schema


def load(name: str, schema: str, path: str | Path) -> Dataset:
    """A raw dataset file as canonical rows (menagerie.data.sources.normalize), with the file's sha256."""
    path = Path(path)
    raw, locations = read_located(path)
    return Dataset(normalize(raw, schema, name, str(path), locations), sha256_file(path))


def select(
    mixture: dict, datasets_cfg: dict, raw_paths: dict[str, Path], kind: str
) -> tuple[list[Source], dict[str, Dataset]]:
    """Step 1: each item's rows by its origin selection (every dataset loaded once); items of one dataset must
    select disjoint rows. Returns the sources in item order and the datasets in first-use order."""
    datasets: dict[str, Dataset] = {}
    sources = []
    for position, item in enumerate(mixture["sources"]):
        name, where = item["dataset"], f"data.{kind}.sources.{position}"
        schema = _check_source(item, where, datasets_cfg, raw_paths, kind)
        if name not in datasets:
            datasets[name] = load(name, schema, raw_paths[name])
        dataset = datasets[name]
        indices = _select(dataset.rows, item)
        if _selection(item) and not indices:
            origins = ", ".join(sorted({r.get("origin", "") for r in dataset.rows})[:12])
            raise ConfigError(
                f"{where}: no row of dataset '{name}' has an origin selected by {_selection(item)} "
                f"(origins present: {origins})"
            )
        overlap = [dataset.claimed[i] for i in indices if i in dataset.claimed]
        if overlap:
            raise ConfigError(
                f"{where}: selects rows of dataset '{name}' that data.{kind}.sources.{overlap[0]} "
                f"also selects; give items of one dataset disjoint `origins`"
            )
        dataset.claimed.update({i: position for i in indices})
        sources.append(Source(position, item, where, len(dataset.rows), [dataset.rows[i] for i in indices]))
    return sources, datasets


def filter_rows(sources: list[Source], filters: dict) -> list[Source]:
    """Step 2: the recipe's per-row filters (Birbal: menagerie.data.filters) on each source's selection."""
    for source in sources:
        source.eligible, source.filtered_out = (
            row_filters(source.selected, filters) if filters else (source.selected, {})
        )
    return sources


def sample(sources: list[Source], kind: str, seed: int) -> list[dict]:
    """Step 3: each source's `count` / `fraction` / all of its eligible rows, drawn with its own generator; returns
    the draws concatenated in item order."""
    for source in sources:
        source.picked, source.requested = _take(source.eligible, source.item, kind, seed, source.where)
    return [row for source in sources for row in source.picked]


def curate(rows: list[dict], filters: dict, curation: dict | None) -> Curated:
    """Step 4: duplicates removed across the whole mixture: Birbal's input dedup (filters.dedup_input), then
    Platypus curation (exact + near-duplicate removal, menagerie.data.curation)."""
    curated = Curated(rows)
    if filters.get("dedup_input"):
        curated.rows = dedup_inputs(rows)
        curated.dedup_dropped = len(rows) - len(curated.rows)
    if curation:
        curated.rows, curated.curation = curate_rows(curated.rows, curation)
    return curated


def split(rows: list[dict], seed: int, validation: int, kind: str) -> tuple[list[dict], list[dict]]:
    """Step 5: the rows shuffled with random.Random(seed); the last `validation` become the validation split."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    if not rows:
        raise ConfigError(f"data.{kind}: the mixture's sources provide no rows")
    if validation >= len(rows):
        raise ConfigError(
            f"data.{kind}.validation ({validation}) must be smaller than the {len(rows)} rows the mixture provides"
        )
    cut = len(rows) - validation
    return rows[:cut], rows[cut:]


def source_entry(source: Source, kept: list[dict], digest: str, filters: dict) -> dict[str, Any]:
    """A source's line of the report: what was requested, available, filtered, sampled and, of `kept` (the rows that
    survived curation), obtained, with their word lengths."""
    item = source.item
    entry: dict[str, Any] = {"dataset": item["dataset"], **_selection(item), "requested": source.requested}
    if item.get("paper_count") is not None:
        entry["paper_count"] = item["paper_count"]
    entry["available"] = source.available
    if _selection(item):
        entry["origin_excluded"] = source.available - len(source.selected)
    if filters:
        entry["filtered_out"] = source.filtered_out
    picked = {id(row) for row in source.picked}
    obtained = [row for row in kept if id(row) in picked]
    entry.update(
        {
            "sampled": len(source.picked),
            "input_sha256": digest,
            "obtained": len(obtained),
            "length": length_stats(obtained),
        }
    )
    return entry


def filters_summary(filters: dict, entries: list[dict], dedup_dropped: int | None) -> dict:
    """The report's `filters`: the settings and the rows each filter dropped over all sources."""
    summary: dict[str, Any] = {
        "settings": {k: filters[k] for k in sorted(filters)},
        "word_unit": "whitespace-split words",
        "origin_excluded": sum(e.get("origin_excluded", 0) for e in entries),
    }
    for key in ("max_prompt_words", "min_input_words"):
        if filters.get(key):
            summary[key] = {"limit": filters[key], "dropped": sum(e["filtered_out"].get(key, 0) for e in entries)}
    if dedup_dropped is not None:
        summary["dedup_input"] = {"dropped": dedup_dropped}
    return summary


def report(
    kind: str,
    seed: int,
    sources: list[Source],
    datasets: dict[str, Dataset],
    curated: Curated,
    train: list[dict],
    val: list[dict],
    filters: dict,
) -> dict:
    """Step 6: the mixture's report (module docstring)."""
    entries = [source_entry(s, curated.rows, datasets[s.item["dataset"]].digest, filters) for s in sources]
    combined = train + val
    lengths = [rendered_chars(row) for row in combined]
    # rows of a dataset that items select by origin but no item took: shows a misspelt or unexpected origin
    unselected = {
        name: len(dataset.rows) - len(dataset.claimed)
        for name, dataset in datasets.items()
        if any(_selection(s.item) for s in sources if s.item["dataset"] == name)
    }
    return {
        "kind": kind,
        "seed": seed,
        "sources": entries,
        "train_rows": len(train),
        "validation_rows": len(val),
        "input_sha256": {name: dataset.digest for name, dataset in datasets.items()},
        **({"unselected_rows": unselected} if unselected else {}),
        "sha256": {"train": jsonl_sha256(train), "validation": jsonl_sha256(val)},
        "chars": {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)},
        "length": {"unit": LENGTH_UNIT, "tokenizer": None, **length_stats(combined)},
        **({"filters": filters_summary(filters, entries, curated.dedup_dropped)} if filters else {}),
        **({"curation": curated.curation} if curated.curation else {}),
    }


def build_mixture(
    mixture: dict, datasets_cfg: dict, raw_paths: dict[str, Path], kind: str
) -> tuple[list[dict], list[dict], dict]:
    """Return (train_rows, validation_rows, report) for a resolved `data.sft` or `data.dpo` entry.

    `raw_paths` maps each source dataset to the jsonl file of its raw rows; `kind` is "sft" or "dpo".
    """
    seed, validation, filters = mixture_settings(mixture, kind)
    sources, datasets = select(mixture, datasets_cfg, raw_paths, kind)
    drawn = sample(filter_rows(sources, filters), kind, seed)
    curated = curate(drawn, filters, mixture.get("curation"))
    train, val = split(curated.rows, seed, validation, kind)
    return train, val, report(kind, seed, sources, datasets, curated, train, val, filters)
