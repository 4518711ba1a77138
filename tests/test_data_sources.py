"""Dataset loading: the four file formats, canonical rows per schema, errors, and materialization."""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from menagerie.data.generate import generate
from menagerie.data.sources import materialize_dataset, normalize, read_rows
from menagerie.errors import ConfigError, MenagerieError, MissingInputError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROWS = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": "Café?", "answer": "7"}]
TULU = {
    "dataset": "x",
    "id": "t1",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ],
}


def test_read_rows_jsonl_json_parquet_csv(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n", encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    with open(tmp_path / "e.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(ROWS)
    for name in ("a.jsonl", "b.json", "c.json", "d.parquet", "e.csv"):
        assert read_rows(tmp_path / name) == ROWS, name


def test_read_rows_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(MenagerieError, match=rf"{re.escape(str(bad))} line 2: not valid JSON"):
        read_rows(bad)
    (tmp_path / "list.jsonl").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(MenagerieError, match="list.jsonl line 1: expected a JSON object, got list"):
        read_rows(tmp_path / "list.jsonl")
    (tmp_path / "x.json").write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(
        MenagerieError,
        match="x.json: expected a JSON list of objects, an object with a 'data' list, "
        "or a Natural Instructions task file",
    ):
        read_rows(tmp_path / "x.json")
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(MenagerieError, match="x.parquet: not a readable parquet file"):
        read_rows(tmp_path / "x.parquet")
    (tmp_path / "x.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(MenagerieError, match=r"x.txt: unknown file type '.txt' \(expected one of .jsonl"):
        read_rows(tmp_path / "x.txt")
    with pytest.raises(MissingInputError, match="nope.jsonl does not exist"):
        read_rows(tmp_path / "nope.jsonl")


def test_normalize_tulu_messages_keeps_the_conversation() -> None:
    rows = normalize([TULU, {"messages": TULU["messages"][1:]}], "tulu_messages", "mix", "f.jsonl")
    assert rows[0] == {"id": "t1", "source": "mix", "messages": TULU["messages"], "origin": "x"}  # origin: `dataset`
    assert rows[1]["id"] == "mix_1" and [m["role"] for m in rows[1]["messages"]] == ["user", "assistant"]


def test_normalize_open_platypus_moves_input_to_context() -> None:
    raw = [
        {"instruction": "Add.", "input": "2 and 3", "output": "5", "data_source": "s"},
        {"instruction": "What is 2 + 3?", "input": "", "output": "5", "data_source": "s"},
    ]
    with_input, plain = normalize(raw, "open_platypus", "plat", "f.jsonl")
    assert with_input == {
        "id": "plat_0",
        "source": "plat",
        "context": "2 and 3",
        "origin": "s",
        "messages": [{"role": "user", "content": "Add."}, {"role": "assistant", "content": "5"}],
    }
    assert "context" not in plain and plain["messages"][0]["content"] == "What is 2 + 3?"


def test_normalize_ultrafeedback_splits_prompt_and_replies() -> None:
    raw = generate("arithmetic_preferences", 3, 1, "ultrafeedback")
    rows = normalize(raw, "ultrafeedback", "prefs", "hub:x")
    for canon, row in zip(rows, raw):
        assert canon["id"] == row["prompt_id"] and canon["source"] == "prefs"
        assert canon["messages"] == [{"role": "user", "content": row["prompt"]}]
        assert canon["chosen"] == row["chosen"][-1]["content"]
        assert canon["rejected"] == row["rejected"][-1]["content"]


def test_normalize_eval_exact_and_csv_message_text() -> None:
    assert normalize([{"question": "q", "answer": 81}], "eval_exact", "ev", "o") == [
        {"id": "ev_0", "question": "q", "answer": "81"}
    ]
    as_text = {"messages": json.dumps(TULU["messages"])}  # how a CSV export stores the list
    assert normalize([as_text], "tulu_messages", "m", "o")[0]["messages"] == TULU["messages"]


def test_normalize_errors_name_origin_row_field_and_schema() -> None:
    rows = [TULU] * 3 + [{"id": "oops"}]
    with pytest.raises(MenagerieError) as info:
        normalize(rows, "tulu_messages", "x", "resources/datasets/x.jsonl")
    assert str(info.value) == (
        "resources/datasets/x.jsonl row 4 (id oops): missing field 'messages' expected by "
        "schema tulu_messages (dataset 'x')"
    )
    with pytest.raises(
        MenagerieError,
        match="row 1: field 'messages' message 1 has role 'tool', expected one of system, user, assistant",
    ):
        normalize([{"messages": [{"role": "tool", "content": "x"}]}], "tulu_messages", "x", "o")
    with pytest.raises(MenagerieError, match="o row 1: missing field 'output' expected by schema open_platypus"):
        normalize([{"instruction": "i", "input": ""}], "open_platypus", "x", "o")
    bad_pref = {"prompt": "p", "chosen": [{"role": "user", "content": "p"}], "rejected": "no"}
    with pytest.raises(MenagerieError, match="field 'chosen' expected to end with an assistant message"):
        normalize([bad_pref], "ultrafeedback", "x", "o")
    with pytest.raises(MenagerieError, match="o row 1: missing field 'answer' expected by schema eval_exact"):
        normalize([{"question": "q"}], "eval_exact", "x", "o")
    with pytest.raises(MenagerieError, match="unknown schema 'alpaca'"):
        normalize([], "alpaca", "x", "o")


def test_materialize_generated_writes_the_generator_rows(tmp_path: Path) -> None:
    entry = {"source": "generated", "generator": "arithmetic", "count": 20, "schema": "open_platypus", "seed": 4}
    out = tmp_path / "sub" / "tiny.jsonl"
    materialize_dataset("tiny", entry, out)
    assert read_rows(out) == generate("arithmetic", 20, 4, "open_platypus")
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.jsonl"], "a temporary file was left behind"


def test_materialize_generated_bad_count_names_the_dataset(tmp_path: Path) -> None:
    entry = {"source": "generated", "generator": "mixed_eval", "count": 10**6, "schema": "eval_exact"}
    with pytest.raises(ConfigError, match="dataset 'ev': generator 'mixed_eval' can make at most"):
        materialize_dataset("ev", entry, tmp_path / "ev.jsonl")
    assert not any(tmp_path.iterdir())


def test_materialize_local_checks_rows_against_the_schema(tmp_path: Path) -> None:
    src = tmp_path / "mine.json"
    src.write_text(json.dumps({"data": [TULU]}), encoding="utf-8")
    materialize_dataset("mine", {"source": "local", "path": str(src), "schema": "tulu_messages"}, tmp_path / "o.jsonl")
    assert read_rows(tmp_path / "o.jsonl") == [TULU]
    expected = rf"{re.escape(str(src))} line 1 \(id t1\): missing field 'question' expected by schema eval_exact"
    with pytest.raises(MenagerieError, match=expected):
        materialize_dataset("mine", {"source": "local", "path": str(src), "schema": "eval_exact"}, tmp_path / "p.jsonl")
    assert not (tmp_path / "p.jsonl").exists()


def test_unavailable_hub_dataset_is_one_sentence_missing_input(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # the libraries read the variables at import: keep this test offline even if they were imported earlier
    for module, attr in (("datasets.config", "HF_HUB_OFFLINE"), ("huggingface_hub.constants", "HF_HUB_OFFLINE")):
        if module in sys.modules:
            monkeypatch.setattr(sys.modules[module], attr, True)
    entry = {
        "source": "hub",
        "repo": "menagerie-test/does-not-exist",
        "schema": "tulu_messages",
        "split": "train",
        "revision": "0123abc",
    }
    started = time.monotonic()
    with pytest.raises(MissingInputError) as info:
        materialize_dataset("ghost", entry, tmp_path / "ghost.jsonl")
    assert time.monotonic() - started < 60
    assert str(info.value) == (
        "dataset 'ghost' (menagerie-test/does-not-exist@0123abc) is not available offline: download it into the HF "
        "cache (HF_HOME) with `hf download --repo-type dataset menagerie-test/does-not-exist --revision 0123abc` on "
        "a machine with hub access, or set `datasets.ghost.source: local` and `path:` to a local copy in your "
        "--configfile"
    )
    assert not (tmp_path / "ghost.jsonl").exists()
    with pytest.raises(MissingInputError, match=r"\(menagerie-test/does-not-exist@abc123, config 3\.0\.0\)"):
        materialize_dataset("ghost", {**entry, "revision": "abc123", "config": "3.0.0"}, tmp_path / "ghost.jsonl")


def test_unpinned_hub_dataset_stops_before_loading_and_says_to_pin_it(tmp_path: Path, monkeypatch) -> None:
    import datasets

    def fail(*args, **kwargs):
        raise AssertionError("an unpinned hub dataset must not be loaded")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    for entry in (
        {"source": "hub", "repo": "org/data", "schema": "lima"},
        {"source": "hub", "repo": "org/data", "schema": "lima", "revision": None},
    ):
        with pytest.raises(MissingInputError) as info:
            materialize_dataset("lima", entry, tmp_path / "lima.jsonl")
        assert str(info.value) == (
            "dataset 'lima' (org/data) has no pinned revision: set `datasets.lima.revision:` to the commit SHA of the "
            "snapshot you use (download it with `hf download --repo-type dataset org/data --revision <sha>` on a "
            "machine with hub access), or set `datasets.lima.source: local` and `path:` to a local copy in your "
            "--configfile"
        )
    assert not (tmp_path / "lima.jsonl").exists()


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (opt-in real benchmark samples)")
def test_read_rows_on_real_benchmark_files() -> None:
    gsm8k = read_rows(SHARED / "gsm8k_test.jsonl")
    assert len(gsm8k) == 1319 and all(set(r) == {"question", "answer"} for r in gsm8k)
    assert gsm8k[0]["answer"].rsplit("#### ", 1)[1] == "18"
    assert normalize(gsm8k[:5], "eval_exact", "gsm8k", "gsm8k_test.jsonl")[0]["id"] == "gsm8k_0"
    arc = read_rows(SHARED / "arc" / "ARC-Challenge-Test.jsonl")
    assert len(arc) == 1150 and all(set(r) == {"id", "question", "answerKey"} for r in arc)
    assert all({"stem", "choices"} <= set(r["question"]) for r in arc)
