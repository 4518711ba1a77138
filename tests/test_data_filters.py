"""Birbal's filters ([BB] §3) with hand-computed cases, and the mixture's origin selection, paper counts and
per-filter report counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from menagerie.data.filters import dedup_inputs, fields, row_filters, single_turn, words
from menagerie.data.mixture import build_mixture
from menagerie.errors import ConfigError
from menagerie.io import sha256_file

BIRBAL = {"single_turn": True, "max_prompt_words": 800, "min_input_words": 5, "dedup_input": True}


def row(instruction: str, given: str | None = None, reply: str = "ok", **extra) -> dict:
    out = {
        "id": extra.pop("id", "r"),
        "source": "s",
        "messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": reply}],
        **extra,
    }
    if given is not None:
        out["context"] = given
    return out


def n_words(n: int, word: str = "w") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def test_words_are_whitespace_separated() -> None:
    assert words("a b\nc\t d  e") == 5 and words("") == 0 and words("   ") == 0


def test_fields_follow_the_birbal_layout() -> None:
    assert fields(row("Summarize.", "An article.")) == ("Summarize.", "An article.")
    assert fields(row("What is 2 + 2?")) == ("", "What is 2 + 2?")  # no input: the question is the input


@pytest.mark.parametrize(
    "instruction_words,input_words,kept",
    [
        (0, 800, True),
        (0, 801, False),  # exactly 800 words passes, 801 fails ([BB]: <= 800)
        (300, 500, True),
        (301, 500, False),  # instruction and input count together
        (795, 5, True),
        (796, 5, False),
    ],
)
def test_max_prompt_words_is_inclusive_at_800(instruction_words: int, input_words: int, kept: bool) -> None:
    if instruction_words:
        case = row(n_words(instruction_words, "i"), n_words(input_words))
    else:  # no context: the whole prompt is the input
        case = row(n_words(input_words))
    out, dropped = row_filters([case], {"max_prompt_words": 800})
    assert (len(out) == 1) is kept
    assert dropped == {"max_prompt_words": 0 if kept else 1}


@pytest.mark.parametrize(
    "text,kept",
    [
        ("one two three four", False),
        ("one two three four five", True),
        ("What is 2 + 2?", True),
        ("Compute 2 plus 2.", False),
    ],
)
def test_input_must_have_more_than_four_words(text: str, kept: bool) -> None:
    as_input = row("Solve the word problem.", text)  # the input is the context ...
    as_question = row(text)  # ... or the whole prompt when there is none
    for case in (as_input, as_question):
        out, dropped = row_filters([case], {"min_input_words": 5})
        assert (out == [case]) is kept and dropped == {"min_input_words": 0 if kept else 1}
    # a long instruction does not rescue a short input
    out, _ = row_filters([row(n_words(50), "short input here")], {"min_input_words": 5})
    assert out == []


def test_dedup_keeps_the_first_row_of_each_exact_input() -> None:
    rows = [
        row("What is 12 + 30 exactly?", id="a"),
        row("Add.", "What is 12 + 30 exactly?", id="b"),
        row("What is 12 + 30 exactly? ", id="c"),
        row("what is 12 + 30 exactly?", id="d"),
        row("What is 12 + 30 exactly?", id="e", reply="different reply"),
    ]
    assert [r["id"] for r in dedup_inputs(rows)] == ["a", "c", "d"]  # exact: whitespace and case matter


def test_single_turn_keeps_the_first_exchange() -> None:
    multi = {
        "id": "m",
        "source": "s",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
        ],
    }
    assert single_turn(multi)["messages"] == [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    plain = row("Q")
    assert single_turn(plain) is plain
    out, _ = row_filters([multi], {"single_turn": True, "min_input_words": 1})
    assert len(out[0]["messages"]) == 2 and multi["messages"][3]["content"] == "Q2"  # the input is not mutated


def test_a_row_failing_both_limits_counts_once() -> None:
    out, dropped = row_filters([row(n_words(900, "i"), "tiny")], BIRBAL)
    assert out == [] and dropped == {"max_prompt_words": 1, "min_input_words": 0}


# --------------------------------------------------------------------------------------------- in the mixture


DATASETS = {
    "plat": {"source": "local", "path": "plat.jsonl", "schema": "open_platypus"},
    "mi": {"source": "local", "path": "mi.jsonl", "schema": "mathinstruct"},
    "prefs": {"source": "local", "path": "prefs.jsonl", "schema": "ultrafeedback"},
}


@pytest.fixture
def raw(tmp_path: Path) -> dict[str, Path]:
    plat = (
        [
            {
                "instruction": f"Question number {i} about physics here?",
                "input": "",
                "output": "o",
                "data_source": "scibench",
            }
            for i in range(6)
        ]
        + [
            {
                "instruction": f"Generated question {i} from a model?",
                "input": "",
                "output": "o",
                "data_source": "airoboros",
            }
            for i in range(4)
        ]
        + [
            {"instruction": "short one", "input": "", "output": "o", "data_source": "scibench"},
            {"instruction": n_words(801), "input": "", "output": "o", "data_source": "scibench"},
        ]
    )
    mi = (
        [
            {
                "instruction": f"Question number {i} about physics here?",
                "output": "o",
                "source": "data/CoT/gsm_train.json",
            }
            for i in range(3)
        ]  # 0-2 repeat plat's inputs exactly
        + [
            {
                "instruction": f"Tom has {i} apples and buys one more.",
                "output": "print(1)",
                "source": "data/PoT/gsm_gpt4.json",
            }
            for i in range(5)
        ]
    )
    prefs = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    paths = {}
    for name, rows in (("plat", plat), ("mi", mi), ("prefs", prefs)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


def test_origin_selection_filters_and_dedup_are_counted_per_source(raw: dict[str, Path]) -> None:
    mixture = {
        "seed": 1,
        "validation": 2,
        "filters": BIRBAL,
        "sources": [
            {"dataset": "plat", "exclude_origins": ["airoboros"], "paper_count": 9},
            {"dataset": "mi", "origins": ["data/CoT/*"], "count": 3},
        ],
    }
    train, val, report = build_mixture(mixture, DATASETS, raw, "sft")
    plat, mi = report["sources"]
    # plat: 12 rows, 4 airoboros excluded, 'short one' (2 words) and the 801-word row filtered, 6 sampled
    assert plat == {
        **plat,
        "dataset": "plat",
        "exclude_origins": ["airoboros"],
        "requested": "all",
        "paper_count": 9,
        "available": 12,
        "origin_excluded": 4,
        "sampled": 6,
        "obtained": 6,
        "filtered_out": {"max_prompt_words": 1, "min_input_words": 1},
    }
    # mi: 8 rows, the 5 PoT rows excluded by origin, 3 sampled, all 3 repeat plat inputs: dropped by dedup
    assert (mi["origin_excluded"], mi["sampled"], mi["obtained"]) == (5, 3, 0)
    assert report["filters"] == {
        "settings": BIRBAL,
        "word_unit": "whitespace-split words",
        "origin_excluded": 9,
        "max_prompt_words": {"limit": 800, "dropped": 1},
        "min_input_words": {"limit": 5, "dropped": 1},
        "dedup_input": {"dropped": 3},
    }
    assert len(train) + len(val) == 6 and {r["origin"] for r in train + val} == {"scibench"}
    assert report["input_sha256"] == {"plat": sha256_file(raw["plat"]), "mi": sha256_file(raw["mi"])}
    assert report["unselected_rows"] == {"plat": 4, "mi": 5}
    # "Question number 3 about physics here?" is 6 words; every reply "o" is 1
    assert report["length"] == {
        "unit": "words",
        "tokenizer": None,
        "prompt": {"mean": 6.0, "max": 6, "total": 36},
        "response": {"mean": 1.0, "max": 1, "total": 6},
    }


def test_items_of_one_dataset_take_disjoint_origins(raw: dict[str, Path]) -> None:
    split = {"sources": [{"dataset": "plat", "origins": ["scibench"]}, {"dataset": "plat", "origins": ["airoboros"]}]}
    train, _, report = build_mixture(split, DATASETS, raw, "sft")
    assert [s["obtained"] for s in report["sources"]] == [8, 4] and len(train) == 12
    assert report["unselected_rows"] == {"plat": 0}
    only_one = build_mixture({"sources": [{"dataset": "plat", "origins": ["scibench"]}]}, DATASETS, raw, "sft")[2]
    assert only_one["unselected_rows"] == {"plat": 4}  # the airoboros rows no item took
    overlapping = {"sources": [{"dataset": "plat", "origins": ["scibench"]}, {"dataset": "plat"}]}
    with pytest.raises(
        ConfigError,
        match=r"data.sft.sources.1: selects rows of dataset 'plat' that "
        r"data.sft.sources.0 also selects",
    ):
        build_mixture(overlapping, DATASETS, raw, "sft")
    with pytest.raises(
        ConfigError,
        match=r"data.sft.sources.0: no row of dataset 'plat' has an origin selected by "
        r"\{'origins': \['guanaco'\]\} \(origins present: airoboros, scibench\)",
    ):
        build_mixture({"sources": [{"dataset": "plat", "origins": ["guanaco"]}]}, DATASETS, raw, "sft")


def test_count_beyond_the_filtered_rows_names_the_shortfall(raw: dict[str, Path]) -> None:
    mixture = {"filters": BIRBAL, "sources": [{"dataset": "plat", "exclude_origins": ["airoboros"], "count": 7}]}
    with pytest.raises(
        ConfigError,
        match=r"source 'plat' requests 7 rows but dataset 'plat' has only 6 after its "
        r"origin selection and the recipe's filters",
    ):
        build_mixture(mixture, DATASETS, raw, "sft")


def test_filters_are_for_sft_mixtures_only(raw: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="data.dpo.filters: the Birbal filters apply to sft mixtures only"):
        build_mixture({"filters": BIRBAL, "sources": [{"dataset": "prefs"}]}, DATASETS, raw, "dpo")


def test_selection_changes_only_its_own_sample(raw: dict[str, Path]) -> None:
    """An item's sample depends on its own selection, not on another item's count."""

    def scibench_ids(other_count: int) -> set[str]:
        mixture = {
            "sources": [
                {"dataset": "plat", "origins": ["scibench"], "count": 4},
                {"dataset": "plat", "origins": ["airoboros"], "count": other_count},
            ]
        }
        rows = build_mixture(mixture, DATASETS, raw, "sft")[0]
        return {r["id"] for r in rows if r["origin"] == "scibench"}

    assert scibench_ids(1) == scibench_ids(4)
