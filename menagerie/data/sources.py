"""Load datasets named in the config: raw rows in their real schema, and canonical rows for training.

Canonical rows (what every later stage reads):
  sft         {"id", "source", "messages": [{"role", "content"}...], "context"?, "origin"?}
  preference  {"id", "source", "messages": prompt messages, "chosen": str, "rejected": str}
  eval_exact  {"id", "question", "answer"}
`context` is the row's input (Open-Platypus `input`, a passage, an article); `origin` its sub-source within the
dataset (see menagerie.data.loaders, which holds one loader per schema). Errors locate a row as `<file> line N`
(1-based; `row N` for parquet and hub rows, also 1-based) with the row's id when it has one; the fallback ids
`<dataset>_<index>` count from 0.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from menagerie.data.generate import generate
from menagerie.data.loaders import LOADERS, RawRow
from menagerie.errors import ConfigError, MenagerieError, MissingInputError
from menagerie.io import decode_utf8, iter_jsonl, write_jsonl

SFT_SCHEMAS = tuple(schema for schema, (kind, _) in LOADERS.items() if kind == "sft")
PREFERENCE_SCHEMAS = tuple(schema for schema, (kind, _) in LOADERS.items() if kind == "preference")
EVAL_SCHEMAS = tuple(schema for schema, (kind, _) in LOADERS.items() if kind == "eval")
ALL_SCHEMAS = SFT_SCHEMAS + PREFERENCE_SCHEMAS + EVAL_SCHEMAS


# ---------------------------------------------------------------------------------------------- reading files
#
# Each reader returns (rows, locations): locations[i] says where rows[i] is, as "<file> line N" (1-based) for the
# text formats and "<file> row N" (1-based) for parquet, so every error names the file and the line.

Located = tuple[list[dict], list[str]]


def _read_jsonl(path: Path) -> Located:
    numbered = list(iter_jsonl(path))
    return [row for _, row in numbered], [f"{path} line {number}" for number, _ in numbered]


def _item_lines(text: str) -> list[int] | None:
    """1-based line where each item of the top-level list (or of the top-level object's 'data' list) starts;
    None for any other layout. `text` is valid JSON (already parsed)."""
    decoder, ws = json.JSONDecoder(), re.compile(r"[ \t\n\r]*")

    def skip(i: int, sep: str = "") -> int:
        i = ws.match(text, i).end()
        return ws.match(text, i + 1).end() if sep and text[i : i + 1] == sep else i

    i = skip(0)
    if text[i : i + 1] == "{":
        i = skip(i + 1)
        while text[i : i + 1] == '"':
            key, i = decoder.raw_decode(text, i)
            i = skip(i, ":")
            if key == "data":
                break
            _, i = decoder.raw_decode(text, i)
            i = skip(i, ",")
        else:
            return None
    if text[i : i + 1] != "[":
        return None
    i, lines, line, counted = skip(i + 1), [], 1, 0
    while text[i : i + 1] not in ("]", ""):
        line, counted = line + text.count("\n", counted, i), i
        lines.append(line)
        _, i = decoder.raw_decode(text, i)
        i = skip(i, ",")
    return lines


def _read_json(path: Path) -> Located:
    text = decode_utf8(path.read_bytes(), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MenagerieError(
            f"{path} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
            f"expected a JSON list of objects"
        ) from None
    if isinstance(data, dict) and "Instances" in data and not isinstance(data.get("data"), list):
        # a Natural Instructions task file: one task, one row
        return [{**data, "task_name": data.get("task_name") or path.stem}], [f"{path} (task file) line 1"]
    lines = _item_lines(text)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise MenagerieError(
            f"{path}: expected a JSON list of objects, an object with a 'data' list, or a Natural "
            f"Instructions task file (an object with 'Instances'), got {type(data).__name__}"
        )
    if lines is None or len(lines) != len(data):
        lines = [None] * len(data)
    locations = [f"{path} line {line}" if line else f"{path} item {index}" for index, line in enumerate(lines, start=1)]
    for row, where in zip(data, locations):
        if not isinstance(row, dict):
            raise MenagerieError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return data, locations


def _read_parquet(path: Path) -> Located:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise MenagerieError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    return rows, [f"{path} row {index}" for index in range(1, len(rows) + 1)]


def _read_csv(path: Path) -> Located:
    reader = csv.DictReader(io.StringIO(decode_utf8(path.read_bytes(), path), newline=""))
    if not reader.fieldnames:
        raise MenagerieError(f"{path}: expected a CSV header row naming the fields, found an empty file")
    rows, locations = [], []
    for row in reader:
        if None in row:
            raise MenagerieError(
                f"{path} line {reader.line_num}: more values than the {len(reader.fieldnames)} header fields"
            )
        rows.append(dict(row))
        locations.append(f"{path} line {reader.line_num}")
    return rows, locations


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}


def read_located(path: str | Path) -> Located:
    """(rows, locations) of a .jsonl, .json, .parquet or .csv file; a directory reads every such file in it, in
    name order (e.g. the `tasks/` folder of Natural Instructions, one task file per row)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READERS)
        if not files:
            raise MissingInputError(f"dataset directory {path} holds no {', '.join(READERS)} files")
        rows, locations = [], []
        for file in files:
            more, where = read_located(file)
            rows += more
            locations += where
        return rows, locations
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise MenagerieError(f"{path}: unknown file type '{path.suffix}' (expected one of {', '.join(READERS)})")
    if not path.is_file():
        raise MissingInputError(f"dataset file {path} does not exist")
    return reader(path)


def read_rows(path: str | Path) -> list[dict]:
    """The row mappings of a .jsonl, .json, .parquet or .csv file or a directory of them (see `read_located`)."""
    return read_located(path)[0]


def empty_file_problem(path: Path) -> str | None:
    """Why a local data file gives no rows ("is empty", "holds only blank lines"), None when it has content."""
    data = path.read_bytes()
    if not data:
        return "is empty (0 bytes)"
    if not data.strip():
        return "holds only blank lines"
    return None


# ---------------------------------------------------------------------------------------------- canonical rows


def normalize_row(
    row: Any, index: int, schema: str, dataset_name: str, origin: str, where: str | None = None
) -> list[dict]:
    """Canonical rows (see the module docstring) of one raw row of `schema` (menagerie.data.loaders); `where`
    locates the row in errors (default "<origin> row <index + 1>")."""
    if schema not in LOADERS:
        raise MenagerieError(f"{origin}: unknown schema '{schema}' (expected one of {', '.join(ALL_SCHEMAS)})")
    raw = RawRow(row, index, schema, where or f"{origin} row {index + 1}", dataset_name)
    return LOADERS[schema][1](raw, dataset_name)


def normalize(
    rows: list[dict], schema: str, dataset_name: str, origin: str, locations: list[str] | None = None
) -> list[dict]:
    """Canonical rows for all `rows` of `schema`; `origin` (file or hub repo) and `locations` (one per row, from
    `read_located`) are named in errors."""
    if schema not in ALL_SCHEMAS:
        raise MenagerieError(f"{origin}: unknown schema '{schema}' (expected one of {', '.join(ALL_SCHEMAS)})")
    return [
        out
        for index, row in enumerate(rows)
        for out in normalize_row(row, index, schema, dataset_name, origin, locations[index] if locations else None)
    ]


# ---------------------------------------------------------------------------------------------- materialize


def _offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = " ".join(cls.__name__ for cls in type(exc).__mro__)
    return any(word in names for word in ("Connect", "Timeout", "Offline", "LocalEntryNotFound"))


def _hub_label(entry: dict) -> str:
    config = f", config {entry['config']}" if entry.get("config") else ""
    return f"{entry['repo']}@{entry.get('revision') or 'unpinned'}{config}"


def unpinned_revision_problem(name: str, entry: dict) -> str | None:
    """The sentence that stops a hub dataset without a pinned `revision` (None when pinned or not a hub one)."""
    if entry.get("source") != "hub" or entry.get("revision"):
        return None
    return (
        f"dataset '{name}' ({entry['repo']}) has no pinned revision: set `datasets.{name}.revision:` to the "
        f"commit SHA of the snapshot you use (download it with `hf download --repo-type dataset {entry['repo']} "
        f"--revision <sha>` on a machine with hub access), or set `datasets.{name}.source: local` and `path:` to "
        f"a local copy in your --configfile"
    )


def _load_hub(name: str, entry: dict) -> tuple[list[dict], str]:
    problem = unpinned_revision_problem(name, entry)
    if problem:  # hub repos are mutable: an unpinned snapshot is not a reproducible input
        raise MissingInputError(problem)
    repo, revision, label = entry["repo"], entry["revision"], _hub_label(entry)
    try:
        import datasets

        table = datasets.load_dataset(repo, entry.get("config"), revision=revision, split=entry.get("split", "train"))
    except Exception as exc:
        if _offline() or _is_network_error(exc):
            raise MissingInputError(
                f"dataset '{name}' ({label}) is not available offline: download it into the HF cache (HF_HOME) with "
                f"`hf download --repo-type dataset {repo} --revision {revision}` on a machine with hub access, or "
                f"set `datasets.{name}.source: local` and `path:` to a local copy in your --configfile"
            ) from None
        raise MenagerieError(f"dataset '{name}' ({label}) could not be loaded: {type(exc).__name__}: {exc}") from None
    return list(table), label


def raw_rows(name: str, entry: dict) -> tuple[list[dict], str]:
    """The raw rows (real schema) of config dataset `name` and a description of where they came from."""
    rows, origin, _ = located_raw_rows(name, entry)
    return rows, origin


def _local_rows(name: str, entry: dict) -> Located:
    path = Path(entry["path"])
    files = (
        sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READERS) if path.is_dir() else [path]
    )
    for file in files:
        problem = empty_file_problem(file) if file.is_file() else None
        if problem:
            raise MenagerieError(f"dataset '{name}': {file} {problem}; expected {entry['schema']} rows")
    try:
        rows, locations = read_located(path)
    except MenagerieError as exc:
        raise type(exc)(f"dataset '{name}': {exc}") from None
    if not rows:
        raise MenagerieError(f"dataset '{name}': {path} holds no rows; expected {entry['schema']} rows")
    return rows, locations


def located_raw_rows(name: str, entry: dict) -> tuple[list[dict], str, list[str] | None]:
    """(raw rows, where they came from, per-row locations or None) of config dataset `name`."""
    source = entry.get("source")
    if source == "generated":
        try:
            rows = generate(entry["generator"], entry["count"], entry.get("seed", 1234), entry["schema"])
        except ValueError as exc:
            raise ConfigError(f"dataset '{name}': {exc}") from None
        return rows, f"generator {entry['generator']}", None
    if source == "hub":
        rows, label = _load_hub(name, entry)
        if not rows:
            raise MenagerieError(
                f"dataset '{name}' ({label}) has no rows in split {entry.get('split', 'train')}; "
                f"expected {entry['schema']} rows"
            )
        return rows, label, None
    if source == "local":
        if not Path(entry["path"]).exists():
            where = f" ({entry['description']})" if entry.get("description") else ""
            raise MissingInputError(
                f"dataset '{name}' ({entry['path']}) does not exist: put its {entry['schema']} "
                f"rows there{where}, or set `datasets.{name}.path:` in your --configfile"
            )
        rows, locations = _local_rows(name, entry)
        return rows, str(entry["path"]), locations
    raise ConfigError(f"dataset '{name}': key 'source' expected one of hub, local, generated, got {source!r}")


def materialize_dataset(name: str, entry: dict, out_path: Path) -> None:
    """Write the raw rows of dataset `name` to `out_path` (jsonl, atomically), checking them against the schema.

    An empty or blank-only local file stops here, naming the file and the dataset (not later, in the mixture)."""
    rows, origin, locations = located_raw_rows(name, entry)
    normalize(rows, entry["schema"], name, origin, locations)
    write_jsonl(rows, out_path)
