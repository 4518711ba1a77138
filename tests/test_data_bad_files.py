"""Bad local data files stop the dataset stage (materialize_dataset) with one sentence that names the file, the
dataset, the 1-based line (and the row's id when it has one) and what was expected (issue 13, #5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from menagerie.data.sources import materialize_dataset
from menagerie.errors import MenagerieError
from menagerie.io import read_jsonl

GOOD = {"id": "r1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def stage(path: Path, schema: str = "tulu_messages", name: str = "mine") -> str:
    """Run the dataset stage on `path`; return its error message (the stage must fail)."""
    out = path.parent / "out.jsonl"
    with pytest.raises(MenagerieError) as info:
        materialize_dataset(name, {"source": "local", "path": str(path), "schema": schema}, out)
    assert not out.exists()
    return str(info.value)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_malformed_json_names_line_and_the_parsers_whole_message(tmp_path):
    bad = '{"id": "r2", "messages": [}'
    path = write(tmp_path / "d.jsonl", json.dumps(GOOD) + "\n" + bad + "\n")
    # the parser stops at "}" (column 27): a value was expected there
    assert stage(path) == (
        f"dataset 'mine': {path} line 2: not valid JSON (Expecting value at column 27); "
        f"expected one JSON object per line"
    )


def test_malformed_json_file_names_its_line(tmp_path):
    path = write(tmp_path / "d.json", '[\n  {"id": "a",\n   "messages": []\n  }\n  {"id": "b"}\n]\n')
    assert stage(path) == (
        f"dataset 'mine': {path} line 5: not valid JSON (Expecting ',' delimiter at column 3); "
        f"expected a JSON list of objects"
    )


def test_missing_field_names_line_after_a_blank_line_and_the_row_id(tmp_path):
    path = write(tmp_path / "d.jsonl", json.dumps(GOOD) + "\n\n" + json.dumps({"id": "r3"}) + "\n")
    assert stage(path) == (
        f"{path} line 3 (id r3): missing field 'messages' expected by schema tulu_messages (dataset 'mine')"
    )


def test_missing_field_in_a_json_list_names_the_items_line(tmp_path):
    rows = [{"id": "r1", "instruction": "a", "output": "b"}, {"id": "r2", "instruction": "x"}]
    text = "[\n" + ",\n".join(json.dumps(r, indent=1) for r in rows) + "\n]\n"
    path = write(tmp_path / "d.json", text)
    # line 1 "[", lines 2-6 the first row (5 lines at indent 1), line 7 the "{" of the second
    assert text.splitlines()[6] == "{"
    assert stage(path, schema="open_platypus") == (
        f"{path} line 7 (id r2): missing field 'output' expected by schema open_platypus (dataset 'mine')"
    )


def test_wrong_role_names_the_message_counting_from_one(tmp_path):
    row = {"id": "r1", "messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]}
    path = write(tmp_path / "d.jsonl", json.dumps(row) + "\n")
    assert stage(path) == (
        f"{path} line 1 (id r1): field 'messages' message 2 has role 'bot', expected one of "
        f"system, user, assistant (dataset 'mine', schema tulu_messages)"
    )


def test_wrong_type_names_field_and_expected_type(tmp_path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 5}]
    path = write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert stage(path, schema="open_platypus") == (
        f"{path} line 2: field 'output' expected a string, got int (dataset 'mine', schema open_platypus)"
    )


def test_wrong_type_in_a_csv_names_its_line(tmp_path):
    path = write(tmp_path / "d.csv", "question,answer\nq1,1\nq2\n")
    assert stage(path, schema="eval_exact") == (
        f"{path} line 3: missing field 'answer' expected by schema eval_exact (dataset 'mine')"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "is empty (0 bytes)"), (b"\n  \n\t\r\n", "holds only blank lines")],
    ids=["empty", "blank-only"],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_empty_and_blank_files_stop_the_dataset_stage(tmp_path, content, problem, suffix):
    path = write(tmp_path / f"d{suffix}", content)
    assert stage(path) == f"dataset 'mine': {path} {problem}; expected tulu_messages rows"


def test_an_empty_json_list_holds_no_rows(tmp_path):
    path = write(tmp_path / "d.json", "[]\n")
    assert stage(path) == f"dataset 'mine': {path} holds no rows; expected tulu_messages rows"


def test_an_empty_file_in_a_dataset_directory_is_named(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    write(folder / "a.jsonl", json.dumps(GOOD) + "\n")
    empty = write(folder / "b.jsonl", "")
    assert stage(folder) == f"dataset 'mine': {empty} is empty (0 bytes); expected tulu_messages rows"


def test_latin1_jsonl_names_the_line_and_column_not_a_byte_offset(tmp_path):
    second = '{"id": "r2", "messages": [{"role": "user", "content": "café"}]}'
    data = (json.dumps(GOOD) + "\n" + second + "\n").encode("latin-1")
    path = write(tmp_path / "d.jsonl", data)
    column = second.index("é") + 1
    assert column == 13 + 13 + 17 + 12 + len("caf") + 1  # '{"id": "r2", ' '"messages": [' ...
    assert stage(path) == (
        f"dataset 'mine': {path} line 2: not UTF-8 text (byte 0xe9 at column {column}: invalid "
        f"continuation byte); expected UTF-8, e.g. re-encode with `iconv -f latin1 -t utf-8`"
    )


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_latin1_json_and_csv_name_the_line(tmp_path, suffix):
    text = (
        '[\n {"question": "q", "answer": "1"},\n {"question": "Zoë?", "answer": "2"}\n]\n'
        if suffix == ".json"
        else "question,answer\nq,1\nZoë?,2\n"
    )
    path = write(tmp_path / f"d{suffix}", text.encode("latin-1"))
    line = 3
    column = text.splitlines()[line - 1].index("ë") + 1
    message = stage(path, schema="eval_exact")
    assert message.startswith(f"dataset 'mine': {path} line {line}: not UTF-8 text (byte 0xeb at column {column}: ")


def test_a_good_file_still_materializes(tmp_path):
    path = write(tmp_path / "d.jsonl", json.dumps(GOOD) + "\n\n")
    materialize_dataset("mine", {"source": "local", "path": str(path), "schema": "tulu_messages"}, tmp_path / "o.jsonl")
    assert read_jsonl(tmp_path / "o.jsonl") == [GOOD]


def test_read_jsonl_rejects_a_non_object_line(tmp_path):
    path = write(tmp_path / "d.jsonl", json.dumps(GOOD) + "\n[1, 2]\n")
    with pytest.raises(MenagerieError, match=rf"^{path} line 2: expected a JSON object, got list$"):
        read_jsonl(path)


# ------------------------------------------------------------------------------------------- through Snakemake


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty (0 bytes); expected tulu_messages rows"),
        (b"\n   \n", "holds only blank lines; expected tulu_messages rows"),
        (
            '{"id": "x", "messages": [{"role": "user", "content": "café"}]}\n'.encode("latin-1"),
            "line 1: not UTF-8 text (byte 0xe9 at column 58: invalid continuation byte)",
        ),
    ],  # 12 + 13 + 17 + 12 + 3 + 1
    ids=["empty", "blank-only", "latin-1"],
)
def test_bad_local_file_stops_the_dataset_rule_in_one_sentence(tmp_path, content, problem):
    """A user's --configfile points a twin's dataset at a bad local file: the dataset job fails with one `error:`
    line naming the dataset and the file, no traceback, and no mixture runs."""
    import subprocess

    from workflow_copy import SNAKEMAKE, copy_workflow

    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "mine.jsonl").write_bytes(content)
    (workdir / "my.yaml").write_text("datasets:\n  tiny-sft:\n    source: local\n    path: mine.jsonl\n")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [str(SNAKEMAKE), "--cores", "1", "results/tiny-tulu2-dpo/data/sft.jsonl", "--configfile", "my.yaml"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: dataset 'tiny-sft': mine.jsonl {problem}"
        + ("; expected UTF-8, e.g. re-encode with `iconv -f latin1 -t utf-8`" if "UTF-8" in problem else "")
    ], result.stderr[-3000:]
    assert "Traceback" not in (workdir / "logs/dataset/tiny-sft.log").read_text()
    assert "the mixture's sources provide no rows" not in result.stderr
    assert not (workdir / "resources/datasets/tiny-sft.jsonl").exists()
