"""Training mixtures: counts, fractions, validation split, determinism, report, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from menagerie.data import mixture as steps
from menagerie.data.mixture import build_mixture
from menagerie.data.sources import materialize_dataset
from menagerie.errors import ConfigError
from menagerie.io import sha256_file, write_jsonl

REPO = Path(__file__).resolve().parents[1]
DATASETS = {
    "arith": {"source": "generated", "generator": "arithmetic", "count": 600, "schema": "tulu_messages", "seed": 1},
    "units": {
        "source": "generated",
        "generator": "unit_conversion",
        "count": 200,
        "schema": "tulu_messages",
        "seed": 2,
    },
    "plat": {"source": "generated", "generator": "arithmetic", "count": 300, "schema": "open_platypus", "seed": 3},
    "prefs": {
        "source": "generated",
        "generator": "arithmetic_preferences",
        "count": 150,
        "schema": "ultrafeedback",
        "seed": 4,
    },
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("raw")
    paths = {}
    for name, entry in DATASETS.items():
        paths[name] = folder / f"{name}.jsonl"
        materialize_dataset(name, entry, paths[name])
    return paths


def mix(sources: list[dict], validation: int = 0, seed: int = 42) -> dict:
    return {"sources": sources, "validation": validation, "seed": seed}


def test_counts_and_validation_split(raw: dict[str, Path]) -> None:
    mixture = mix([{"dataset": "arith", "count": 300}, {"dataset": "units", "count": 100}], validation=40)
    train, val, report = build_mixture(mixture, DATASETS, raw, "sft")
    assert (len(train), len(val)) == (360, 40)
    assert Counter(r["source"] for r in train + val) == {"arith": 300, "units": 100}
    assert len({(r["source"], r["id"]) for r in train + val}) == 400, "rows were sampled with replacement"
    assert {r["source"] for r in train[:50]} == {"arith", "units"}, "the mixture was not shuffled"
    assert [(s["dataset"], s["requested"], s["obtained"]) for s in report["sources"]] == [
        ("arith", 300, 300),
        ("units", 100, 100),
    ]


def test_fraction_and_all(raw: dict[str, Path]) -> None:
    mixture = mix([{"dataset": "arith", "fraction": 0.25}, {"dataset": "plat"}])
    train, val, report = build_mixture(mixture, DATASETS, raw, "sft")
    assert (len(train), len(val)) == (450, 0)
    assert [(s["requested"], s["obtained"]) for s in report["sources"]] == [("fraction 0.25", 150), ("all", 300)]
    platypus = [r for r in train if r["source"] == "plat"]
    assert any("context" in r for r in platypus) and all(len(r["messages"]) == 2 for r in platypus)


def test_deterministic_and_seed_sensitive(raw: dict[str, Path]) -> None:
    mixture = mix([{"dataset": "arith", "count": 200}, {"dataset": "units", "count": 50}], validation=10)
    assert build_mixture(mixture, DATASETS, raw, "sft") == build_mixture(mixture, DATASETS, raw, "sft")
    other, _, _ = build_mixture({**mixture, "seed": 43}, DATASETS, raw, "sft")
    assert other != build_mixture(mixture, DATASETS, raw, "sft")[0]


def test_each_source_samples_independently(raw: dict[str, Path]) -> None:
    small = build_mixture(
        mix([{"dataset": "arith", "count": 100}, {"dataset": "units", "count": 50}]), DATASETS, raw, "sft"
    )[0]
    large = build_mixture(
        mix([{"dataset": "arith", "count": 300}, {"dataset": "units", "count": 50}]), DATASETS, raw, "sft"
    )[0]
    assert {r["id"] for r in small if r["source"] == "units"} == {r["id"] for r in large if r["source"] == "units"}


def test_fewer_rows_than_requested_is_an_error(raw: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="source 'units' requests 500 rows but dataset 'units' has only 200"):
        build_mixture(mix([{"dataset": "units", "count": 500}]), DATASETS, raw, "sft")


def test_schema_kind_validation_and_missing_raw_errors(raw: dict[str, Path]) -> None:
    with pytest.raises(
        ConfigError, match="dataset 'arith' has schema tulu_messages, but a dpo mixture needs ultrafeedback"
    ):
        build_mixture(mix([{"dataset": "arith"}]), DATASETS, raw, "dpo")
    with pytest.raises(ConfigError, match="no raw file was given for dataset 'units'"):
        build_mixture(mix([{"dataset": "units"}]), DATASETS, {"arith": raw["arith"]}, "sft")
    with pytest.raises(ConfigError, match=r"data.sft.validation \(200\) must be smaller than the 200 rows"):
        build_mixture(mix([{"dataset": "units"}], validation=200), DATASETS, raw, "sft")


def test_dpo_mixture_has_canonical_preference_rows(raw: dict[str, Path]) -> None:
    train, val, report = build_mixture(mix([{"dataset": "prefs", "count": 100}], validation=10), DATASETS, raw, "dpo")
    assert (len(train), len(val), report["kind"]) == (90, 10, "dpo")
    for row in train:
        assert set(row) == {"id", "source", "messages", "chosen", "rejected"}
        assert row["messages"][-1]["role"] == "user" and row["chosen"] != row["rejected"]


def test_report_fields_and_hashes_match_the_written_files(raw: dict[str, Path], tmp_path: Path) -> None:
    mixture = mix([{"dataset": "arith", "count": 100}, {"dataset": "plat", "fraction": 0.1}], validation=8, seed=5)
    train, val, report = build_mixture(mixture, DATASETS, raw, "sft")
    assert set(report) == {
        "kind",
        "seed",
        "sources",
        "train_rows",
        "validation_rows",
        "input_sha256",
        "sha256",
        "chars",
        "length",
    }
    assert report["input_sha256"] == {name: sha256_file(raw[name]) for name in ("arith", "plat")}
    assert (report["kind"], report["seed"], report["train_rows"], report["validation_rows"]) == ("sft", 5, 122, 8)
    for source in report["sources"]:
        assert source["input_sha256"] == sha256_file(raw[source["dataset"]])
    assert write_jsonl(train, tmp_path / "t.jsonl") == report["sha256"]["train"] == sha256_file(tmp_path / "t.jsonl")
    write_jsonl(val, tmp_path / "v.jsonl")
    assert report["sha256"]["validation"] == sha256_file(tmp_path / "v.jsonl")
    lengths = [sum(len(m["content"]) for m in r["messages"]) + len(r.get("context", "")) for r in train + val]
    assert report["chars"] == {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)}


# ---- the steps build_mixture chains: select -> filter -> sample -> curate -> split -> report


def test_select_loads_each_dataset_once_in_first_use_order(raw: dict[str, Path]) -> None:
    sources, datasets = steps.select(
        mix([{"dataset": "units"}, {"dataset": "arith", "count": 10}]), DATASETS, raw, "sft"
    )
    assert list(datasets) == ["units", "arith"] and [s.position for s in sources] == [0, 1]
    assert [(s.where, s.available, len(s.selected)) for s in sources] == [
        ("data.sft.sources.0", 200, 200),
        ("data.sft.sources.1", 600, 600),
    ]
    assert datasets["units"].digest == sha256_file(raw["units"])
    assert set(datasets["arith"].claimed.values()) == {1} and len(datasets["arith"].claimed) == 600
    with pytest.raises(ConfigError, match="data.sft.sources.1: dataset 'nope' is not defined in datasets"):
        steps.select(mix([{"dataset": "units"}, {"dataset": "nope"}]), DATASETS, raw, "sft")


def test_filter_keeps_the_selection_without_filters_and_counts_what_each_drops(raw: dict[str, Path]) -> None:
    sources, _ = steps.select(mix([{"dataset": "arith"}]), DATASETS, raw, "sft")
    (source,) = steps.filter_rows(sources, {})
    assert source.eligible == source.selected and source.filtered_out == {}
    (source,) = steps.filter_rows(sources, {"max_prompt_words": 1})
    assert source.eligible == [] and source.filtered_out == {"max_prompt_words": 600}


def test_sample_draws_each_source_and_concatenates_in_item_order(raw: dict[str, Path]) -> None:
    sources, _ = steps.select(
        mix([{"dataset": "units", "fraction": 0.1}, {"dataset": "arith", "count": 7}, {"dataset": "plat"}]),
        DATASETS,
        raw,
        "sft",
    )
    rows = steps.sample(steps.filter_rows(sources, {}), "sft", 42)
    assert [(s.requested, len(s.picked)) for s in sources] == [("fraction 0.1", 20), (7, 7), ("all", 300)]
    assert [r["source"] for r in rows] == ["units"] * 20 + ["arith"] * 7 + ["plat"] * 300
    again, _ = steps.select(mix([{"dataset": "arith", "count": 7}]), DATASETS, raw, "sft")
    assert steps.sample(steps.filter_rows(again, {}), "sft", 42) == sources[1].picked  # its own generator


def test_curate_drops_repeated_inputs_only_when_asked() -> None:
    rows = [
        {"messages": [{"role": "user", "content": c}, {"role": "assistant", "content": "a"}]}
        for c in ("same question", "same question", "other")
    ]
    untouched = steps.curate(rows, {}, None)
    assert untouched.rows == rows and untouched.dedup_dropped is None and untouched.curation is None
    deduped = steps.curate(rows, {"dedup_input": True}, None)
    assert deduped.rows == [rows[0], rows[2]] and deduped.dedup_dropped == 1


def test_split_shuffles_with_the_seed_and_keeps_the_last_rows_for_validation() -> None:
    rows = [{"id": i} for i in range(10)]
    train, val = steps.split(rows, 3, 4, "sft")
    assert (len(train), len(val)) == (6, 4) and sorted(r["id"] for r in train + val) == list(range(10))
    assert steps.split(rows, 3, 4, "sft") == (train, val) and rows == [{"id": i} for i in range(10)]
    assert steps.split(rows, 4, 4, "sft")[0] != train
    with pytest.raises(ConfigError, match="data.dpo: the mixture's sources provide no rows"):
        steps.split([], 3, 0, "dpo")
    with pytest.raises(ConfigError, match=r"data.sft.validation \(10\) must be smaller than the 10 rows"):
        steps.split(rows, 3, 10, "sft")


def test_report_counts_only_the_rows_that_survive_curation(raw: dict[str, Path]) -> None:
    sources, datasets = steps.select(mix([{"dataset": "units", "count": 5, "paper_count": 9}]), DATASETS, raw, "sft")
    rows = steps.sample(steps.filter_rows(sources, {}), "sft", 1)
    curated = steps.Curated(rows[:3], curation={"exact_duplicates": 2})
    train, val = steps.split(curated.rows, 1, 1, "sft")
    report = steps.report("sft", 1, sources, datasets, curated, train, val, {})
    (entry,) = report["sources"]
    assert list(entry) == [
        "dataset",
        "requested",
        "paper_count",
        "available",
        "sampled",
        "input_sha256",
        "obtained",
        "length",
    ]
    assert (entry["sampled"], entry["obtained"], entry["paper_count"]) == (5, 3, 9)
    assert report["curation"] == {"exact_duplicates": 2} and (report["train_rows"], report["validation_rows"]) == (2, 1)
    with pytest.raises(ConfigError, match="mixture kind must be one of sft, dpo"):
        steps.mixture_settings({}, "rm")
    with pytest.raises(ConfigError, match="data.dpo.filters: the Birbal filters apply to sft mixtures only"):
        steps.mixture_settings({"filters": {"dedup_input": True}}, "dpo")
    assert steps.mixture_settings({"sources": []}, "sft") == (42, 0, {})


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_data.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_cli_mixture_and_one_line_errors(raw: dict[str, Path], tmp_path: Path) -> None:
    config = {
        "datasets": DATASETS,
        "recipes": {"r": {"data": {"sft": mix([{"dataset": "arith", "count": 50}], validation=5)}}},
    }
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    out = {name: tmp_path / name for name in ("train.jsonl", "val.jsonl", "report.json")}
    common = [
        "mixture",
        "--config",
        str(tmp_path / "config.json"),
        "--recipe",
        "r",
        "--raw",
        f"arith={raw['arith']}",
        "--train",
        str(out["train.jsonl"]),
        "--validation",
        str(out["val.jsonl"]),
        "--report",
        str(out["report.json"]),
    ]
    done = run_script(*common, "--part", "sft")
    assert done.returncode == 0, done.stderr
    report = json.loads(out["report.json"].read_text(encoding="utf-8"))
    assert report["sha256"]["train"] == sha256_file(out["train.jsonl"]) and report["train_rows"] == 45
    failed = run_script(*common, "--part", "dpo")
    assert failed.returncode == 1
    assert failed.stderr == "error: recipe 'r': key 'data.dpo' is not defined\n"
    failed = run_script("materialize", "--config", str(tmp_path / "config.json"), "--dataset", "nope", "--out", "x")
    assert (failed.returncode, failed.stderr) == (1, "error: dataset 'nope' is not defined in the config\n")
