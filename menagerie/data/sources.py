"""Load datasets named in the config: raw rows in their real schema, and canonical rows for training.

Canonical rows (what every later stage reads):
  sft         {"id", "source", "messages": [{"role", "content"}...], "context"?}
  preference  {"id", "source", "messages": prompt messages, "chosen": str, "rejected": str}
  eval_exact  {"id", "question", "answer"}
Row indices in error messages count from 0, like the `<dataset>_<index>` ids.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, NoReturn

from menagerie.data.generate import generate
from menagerie.errors import ConfigError, MenagerieError, MissingInputError
from menagerie.io import write_jsonl

ROLES = ("system", "user", "assistant")
SFT_SCHEMAS = ("tulu_messages", "open_platypus")
PREFERENCE_SCHEMAS = ("ultrafeedback",)
EVAL_SCHEMAS = ("eval_exact",)
ALL_SCHEMAS = SFT_SCHEMAS + PREFERENCE_SCHEMAS + EVAL_SCHEMAS


# ---------------------------------------------------------------------------------------------- reading files


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MenagerieError(f"{path} line {number}: not valid JSON ({exc.msg}); expected one JSON object "
                                     "per line") from None
            if not isinstance(row, dict):
                raise MenagerieError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MenagerieError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise MenagerieError(f"{path}: expected a JSON list of objects or an object with a 'data' list, "
                             f"got {type(data).__name__}")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise MenagerieError(f"{path} item {index}: expected a JSON object, got {type(row).__name__}")
    return data


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise MenagerieError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None


def _read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise MenagerieError(f"{path}: expected a CSV header row naming the fields, found an empty file")
        rows = []
        for row in reader:
            if None in row:
                raise MenagerieError(f"{path} line {reader.line_num}: more values than the "
                                     f"{len(reader.fieldnames)} header fields")
            rows.append(dict(row))
    return rows


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}


def read_rows(path: str | Path) -> list[dict]:
    """Read a .jsonl, .json, .parquet or .csv file into a list of row mappings."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise MenagerieError(f"{path}: unknown file type '{path.suffix}' (expected one of {', '.join(READERS)})")
    if not path.is_file():
        raise MissingInputError(f"dataset file {path} does not exist")
    try:
        return reader(path)
    except UnicodeDecodeError as exc:
        raise MenagerieError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


# ---------------------------------------------------------------------------------------------- canonical rows


class _Row:
    """Field access for one raw row that reports problems with origin, index and schema."""

    def __init__(self, row: Any, index: int, schema: str, origin: str) -> None:
        self.row, self.index, self.schema, self.origin = row, index, schema, origin
        if not isinstance(row, dict):
            self.fail(f"expected a mapping of fields, got {type(row).__name__}")

    def fail(self, problem: str) -> NoReturn:
        raise MenagerieError(f"{self.origin} row {self.index}: {problem} (schema {self.schema})")

    def require(self, field: str) -> Any:
        if field not in self.row or self.row[field] is None:
            raise MenagerieError(f"{self.origin} row {self.index}: missing field '{field}' expected by schema "
                                 f"{self.schema}")
        return self.row[field]

    def text(self, field: str) -> str:
        value = self.require(field)
        if not isinstance(value, str):
            self.fail(f"field '{field}' expected a string, got {type(value).__name__}")
        return value

    def messages(self, field: str) -> list[dict]:
        value = self.require(field)
        if isinstance(value, str):  # CSV and some exports store nested lists as JSON text
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                self.fail(f"field '{field}' expected a list of messages, got a string that is not JSON")
        if not isinstance(value, list) or not value:
            self.fail(f"field '{field}' expected a non-empty list of messages")
        out = []
        for position, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                self.fail(f"field '{field}' message {position} expected a mapping with 'role' and string 'content'")
            if message.get("role") not in ROLES:
                self.fail(f"field '{field}' message {position} has role {message.get('role')!r}, "
                          f"expected one of {', '.join(ROLES)}")
            out.append({"role": message["role"], "content": message["content"]})
        return out

    def row_id(self, dataset_name: str, *fields: str) -> str:
        for field in fields:
            if self.row.get(field) not in (None, ""):
                return str(self.row[field])
        return f"{dataset_name}_{self.index}"


def _split_preference(row: _Row, field: str) -> tuple[list[dict], str]:
    """(prompt messages, final assistant reply) of a chosen/rejected conversation."""
    value = row.require(field)
    if isinstance(value, str):  # a bare reply, or a conversation stored as JSON text (CSV)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, list):
            return [{"role": "user", "content": row.text("prompt")}], value
    messages = row.messages(field)
    if messages[-1]["role"] != "assistant":
        row.fail(f"field '{field}' expected to end with an assistant message")
    return messages[:-1], messages[-1]["content"]


def normalize_row(row: Any, index: int, schema: str, dataset_name: str, origin: str) -> dict:
    """Convert one raw row of `schema` into a canonical row (see the module docstring)."""
    r = _Row(row, index, schema, origin)
    if schema == "tulu_messages":
        return {"id": r.row_id(dataset_name, "id"), "source": dataset_name, "messages": r.messages("messages")}
    if schema == "open_platypus":
        out = {"id": r.row_id(dataset_name, "id"), "source": dataset_name,
               "messages": [{"role": "user", "content": r.text("instruction")},
                            {"role": "assistant", "content": r.text("output")}]}
        context = r.row.get("input")
        if context is not None and not isinstance(context, str):
            r.fail(f"field 'input' expected a string, got {type(context).__name__}")
        if context and context.strip():
            out["context"] = context
        return out
    if schema == "ultrafeedback":
        prompt, chosen = _split_preference(r, "chosen")
        _, rejected = _split_preference(r, "rejected")
        if not prompt:
            prompt = [{"role": "user", "content": r.text("prompt")}]
        return {"id": r.row_id(dataset_name, "prompt_id", "id"), "source": dataset_name, "messages": prompt,
                "chosen": chosen, "rejected": rejected}
    if schema == "eval_exact":
        question, answer = r.text("question"), r.require("answer")
        if not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
            r.fail(f"field 'answer' expected a string or number, got {type(answer).__name__}")
        return {"id": r.row_id(dataset_name, "id"), "question": question, "answer": str(answer)}
    raise MenagerieError(f"{origin}: unknown schema '{schema}' (expected one of {', '.join(ALL_SCHEMAS)})")


def normalize(rows: list[dict], schema: str, dataset_name: str, origin: str) -> list[dict]:
    """Canonical rows for all `rows` of `schema`; `origin` (file or hub repo) is named in errors."""
    if schema not in ALL_SCHEMAS:
        raise MenagerieError(f"{origin}: unknown schema '{schema}' (expected one of {', '.join(ALL_SCHEMAS)})")
    return [normalize_row(row, index, schema, dataset_name, origin) for index, row in enumerate(rows)]


# ---------------------------------------------------------------------------------------------- materialize


def _offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = " ".join(cls.__name__ for cls in type(exc).__mro__)
    return any(word in names for word in ("Connect", "Timeout", "Offline", "LocalEntryNotFound"))


def _load_hub(name: str, entry: dict) -> tuple[list[dict], str]:
    repo, revision = entry["repo"], entry.get("revision")
    try:
        import datasets

        table = datasets.load_dataset(repo, revision=revision, split=entry.get("split", "train"))
    except Exception as exc:
        if _offline() or _is_network_error(exc):
            raise MissingInputError(
                f"dataset '{name}' ({repo}@{revision or 'unpinned'}) is not available offline: download it into "
                f"the HF cache (HF_HOME) with `hf download --repo-type dataset {repo}` on a machine "
                f"with hub access, or set `datasets.{name}.source: local` and `path:` to a local copy in your "
                f"--configfile") from None
        raise MenagerieError(f"dataset '{name}' ({repo}@{revision or 'unpinned'}) could not be loaded: "
                             f"{type(exc).__name__}: {exc}") from None
    return list(table), f"{repo}@{revision or 'unpinned'}"


def raw_rows(name: str, entry: dict) -> tuple[list[dict], str]:
    """The raw rows (real schema) of config dataset `name` and a description of where they came from."""
    source = entry.get("source")
    if source == "generated":
        try:
            rows = generate(entry["generator"], entry["count"], entry.get("seed", 1234), entry["schema"])
        except ValueError as exc:
            raise ConfigError(f"dataset '{name}': {exc}") from None
        return rows, f"generator {entry['generator']}"
    if source == "hub":
        return _load_hub(name, entry)
    if source == "local":
        return read_rows(entry["path"]), str(entry["path"])
    raise ConfigError(f"dataset '{name}': key 'source' expected one of hub, local, generated, got {source!r}")


def materialize_dataset(name: str, entry: dict, out_path: Path) -> None:
    """Write the raw rows of dataset `name` to `out_path` (jsonl, atomically), checking them against the schema."""
    rows, origin = raw_rows(name, entry)
    normalize(rows, entry["schema"], name, origin)
    write_jsonl(rows, out_path)
