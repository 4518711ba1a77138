"""Loaders for the real schemas of Birbal's sources (LIMA, Natural Instructions task files, MathInstruct, OpenBookQA,
QuAC, CNN/DailyMail, the released Birbal set): hand-written rows in each layout, the canonical rows they give, and
errors that name the file, the row and the key. Opt-in tests run them over the real samples in ../shared/data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from menagerie.data.loaders import CNN_DAILYMAIL_INSTRUCTION, LOADERS
from menagerie.data.sources import SFT_SCHEMAS, materialize_dataset, normalize, read_rows
from menagerie.errors import MenagerieError
from menagerie.formats import render_segments

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def user_reply(row: dict) -> tuple[str, str]:
    return row["messages"][0]["content"], row["messages"][1]["content"]


def test_every_new_schema_is_an_sft_schema() -> None:
    for schema in ("lima", "natural_instructions", "mathinstruct", "openbookqa", "quac", "cnn_dailymail", "birbal_qa"):
        assert schema in SFT_SCHEMAS and LOADERS[schema][0] == "sft", schema


# ------------------------------------------------------------------------------------------------ LIMA


LIMA = [
    {"conversations": ["How do I boil an egg?", "Put it in boiling water for 8 minutes."], "source": "wikihow"},
    {
        "conversations": ["Hi", "Hello!", "Tell me a joke.", "Why did the chicken cross the road?"],
        "source": "multi_turn",
    },
    {"conversations": ["Q1", "A1", "Q2 left unanswered"], "source": "stackexchange"},
]


def test_lima_alternates_user_and_assistant_and_drops_a_trailing_question() -> None:
    one, multi, odd = normalize(LIMA, "lima", "lima", "lima.jsonl")
    assert one == {
        "id": "lima_0",
        "source": "lima",
        "origin": "wikihow",
        "messages": [
            {"role": "user", "content": "How do I boil an egg?"},
            {"role": "assistant", "content": "Put it in boiling water for 8 minutes."},
        ],
    }
    assert [m["role"] for m in multi["messages"]] == ["user", "assistant", "user", "assistant"]
    assert multi["messages"][3]["content"] == "Why did the chicken cross the road?"
    assert [m["content"] for m in odd["messages"]] == ["Q1", "A1"]


@pytest.mark.parametrize(
    "row,problem",
    [
        ({"conversations": ["only a question"]}, "field 'conversations' expected a list of at least 2 string(s)"),
        ({"conversations": ["Q", 7]}, "field 'conversations' item 2 expected a string, got int"),
        ({"source": "x"}, "missing field 'conversations' expected by schema lima"),
    ],
)
def test_lima_bad_rows_name_file_row_and_key(row: dict, problem: str) -> None:
    with pytest.raises(MenagerieError) as info:
        normalize([LIMA[0], row], "lima", "lima", "data/lima.jsonl")
    assert str(info.value).startswith("data/lima.jsonl row 2: ") and problem in str(info.value)


# ------------------------------------------------------------------------------------ Natural Instructions


TASK = {
    "Contributors": ["x"],
    "Source": ["quoref"],
    "Categories": ["Question Answering"],
    "Definition": ["Answer the question about the passage with a span from it."],
    "Positive Examples": [{"input": "Passage: A met B. Question: who met B?", "output": "A", "explanation": "e"}],
    "Negative Examples": [],
    "Instances": [
        {"id": "task001-aa11", "input": "Passage: C saw D. Question: who saw D?", "output": ["C"]},
        {"id": "task001-bb22", "input": "Passage: E likes F. Question: who likes F?", "output": ["E", "e"]},
    ],
}


def test_natural_instructions_task_gives_one_row_per_instance() -> None:
    rows = normalize(
        [{**TASK, "task_name": "task001_quoref_question_answering"}], "natural_instructions", "ni", "tasks.jsonl"
    )
    assert rows == [
        {
            "id": "task001-aa11",
            "source": "ni",
            "origin": "task001_quoref_question_answering",
            "context": "Passage: C saw D. Question: who saw D?",
            "messages": [
                {"role": "user", "content": "Answer the question about the passage with a span from it."},
                {"role": "assistant", "content": "C"},
            ],
        },
        {
            "id": "task001-bb22",
            "source": "ni",
            "origin": "task001_quoref_question_answering",
            "context": "Passage: E likes F. Question: who likes F?",
            "messages": [
                {"role": "user", "content": "Answer the question about the passage with a span from it."},
                {"role": "assistant", "content": "E"},
            ],
        },
    ]
    # without a task_name the origin is the task number the instance ids carry
    assert {r["origin"] for r in normalize([TASK], "natural_instructions", "ni", "t")} == {"task001"}


def test_natural_instructions_task_files_read_as_rows(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "task001_quoref_question_answering.json").write_text(json.dumps(TASK), encoding="utf-8")
    (tasks / "task002_other.json").write_text(
        json.dumps({**TASK, "Instances": TASK["Instances"][:1]}), encoding="utf-8"
    )
    (tasks / "README.md").write_text("not a task", encoding="utf-8")
    rows = read_rows(tasks)
    assert [r["task_name"] for r in rows] == ["task001_quoref_question_answering", "task002_other"]
    assert len(normalize(rows, "natural_instructions", "ni", str(tasks))) == 3
    out = tmp_path / "ni.jsonl"
    materialize_dataset("ni", {"source": "local", "path": str(tasks), "schema": "natural_instructions"}, out)
    assert read_rows(out) == rows
    with pytest.raises(
        MenagerieError,
        match=r"dataset 'ni' \(.*missing\) does not exist: put its "
        r"natural_instructions rows there",
    ):
        materialize_dataset(
            "ni", {"source": "local", "path": str(tmp_path / "missing"), "schema": "natural_instructions"}, out
        )


@pytest.mark.parametrize(
    "change,problem",
    [
        (
            {"Instances": [{"id": "t-1", "input": "x", "output": ["y"]}, {"id": "t-2", "input": "x"}]},
            "field 'Instances' item 2: missing key 'output'",
        ),
        (
            {"Instances": [{"id": "t-1", "input": "x", "output": []}]},
            "field 'Instances' item 1: key 'output' expected a non-empty list of strings",
        ),
        ({"Instances": []}, "field 'Instances' expected a non-empty list of instances"),
        ({"Definition": [3]}, "field 'Definition' item 1 expected a string, got int"),
        (
            {"Positive Examples": [{"input": "x"}]},
            "field 'Positive Examples' item 1 expected a mapping with string 'input' and 'output'",
        ),
    ],
)
def test_natural_instructions_bad_tasks_name_file_row_and_key(change: dict, problem: str) -> None:
    with pytest.raises(MenagerieError) as info:
        normalize([TASK, {**TASK, **change}], "natural_instructions", "ni", "ni.json")
    assert str(info.value) == f"ni.json row 2: {problem} (dataset 'ni', schema natural_instructions)"


# ------------------------------------------------------------------------------------------- MathInstruct


def test_mathinstruct_keeps_the_source_as_origin() -> None:
    row = {
        "source": "data/CoT/gsm_train.json",
        "instruction": "Tom has 3 apples and buys 2. How many now?",
        "output": "3 + 2 = 5. The answer is 5.",
    }
    assert normalize([row], "mathinstruct", "math", "m.json") == [
        {
            "id": "math_0",
            "source": "math",
            "origin": "data/CoT/gsm_train.json",
            "messages": [
                {"role": "user", "content": row["instruction"]},
                {"role": "assistant", "content": row["output"]},
            ],
        }
    ]
    with pytest.raises(
        MenagerieError,
        match=r"^m.json row 2: missing field 'output' expected by schema "
        r"mathinstruct \(dataset 'math'\)$",
    ):
        normalize([row, {"instruction": "q", "source": "s"}], "mathinstruct", "math", "m.json")


# --------------------------------------------------------------------------------------------- OpenBookQA


OBQA_HUB = {
    "id": "7-980",
    "question_stem": "The sun is responsible for",
    "choices": {"text": ["puppies learning new tricks", "plants sprouting, blooming and wilting"], "label": ["A", "B"]},
    "answerKey": "B",
    "fact1": "the sun is the source of energy for physical cycles on Earth",
}
OBQA_JSONL = {
    "id": "7-980",
    "question": {
        "stem": "The sun is responsible for",
        "choices": [
            {"text": "puppies learning new tricks", "label": "A"},
            {"text": "plants sprouting, blooming and wilting", "label": "B"},
        ],
    },
    "answerKey": "B",
}


def test_openbookqa_hub_and_allenai_layouts_give_the_same_row() -> None:
    expected = {
        "id": "7-980",
        "source": "obqa",
        "messages": [
            {
                "role": "user",
                "content": "The sun is responsible for\nA. puppies learning new tricks\n"
                "B. plants sprouting, blooming and wilting",
            },
            {"role": "assistant", "content": "B"},
        ],
    }
    assert normalize([OBQA_HUB], "openbookqa", "obqa", "o") == [expected]
    assert normalize([OBQA_JSONL], "openbookqa", "obqa", "o") == [expected]
    as_csv = {**OBQA_HUB, "choices": json.dumps(OBQA_HUB["choices"])}  # nested fields as JSON text
    assert normalize([as_csv], "openbookqa", "obqa", "o") == [expected]


@pytest.mark.parametrize(
    "row,problem",
    [
        ({**OBQA_HUB, "answerKey": "E"}, "field 'answerKey' is 'E', expected one of the choice labels A, B"),
        ({**OBQA_HUB, "choices": {"text": ["a"], "label": ["A", "B"]}}, "field 'choices' has 1 texts but 2 labels"),
        ({**OBQA_HUB, "choices": {"label": ["A"]}}, "missing field 'choices.text'"),
        (
            {**OBQA_JSONL, "question": {"stem": "s", "choices": [{"text": "t"}]}},
            "field 'question.choices' expected a non-empty list of {text, label} strings",
        ),
    ],
)
def test_openbookqa_bad_rows_name_file_row_and_key(row: dict, problem: str) -> None:
    with pytest.raises(MenagerieError) as info:
        normalize([row], "openbookqa", "obqa", "obqa.parquet")
    assert str(info.value).startswith("obqa.parquet row 1 (id 7-980): ") and problem in str(info.value)


# --------------------------------------------------------------------------------------------------- QuAC


QUAC = {
    "dialogue_id": "C_1_0",
    "wikipedia_page_title": "Ada Lovelace",
    "background": "English mathematician.",
    "section_title": "Early life",
    "context": "Ada was born in 1815 in London. CANNOTANSWER",
    "turn_ids": ["C_1_0_q#0", "C_1_0_q#1"],
    "questions": ["When was she born?", "Did she have siblings?"],
    "followups": [0, 2],
    "yesnos": [2, 2],
    "answers": {"texts": [["in 1815"], ["CANNOTANSWER"]], "answer_starts": [[12], [32]]},
    "orig_answers": {"texts": ["Ada was born in 1815", "CANNOTANSWER"], "answer_starts": [0, 32]},
}


def test_quac_gives_one_row_per_turn_with_the_earlier_turns_in_context() -> None:
    first, second = normalize([QUAC], "quac", "quac", "q")
    passage = (
        "Title: Ada Lovelace\nBackground: English mathematician.\nSection: Early life\n"
        "Passage: Ada was born in 1815 in London. CANNOTANSWER"
    )
    assert first == {
        "id": "C_1_0_q#0",
        "source": "quac",
        "context": passage,
        "messages": [
            {"role": "user", "content": "When was she born?"},
            {"role": "assistant", "content": "Ada was born in 1815"},
        ],
    }
    assert second["id"] == "C_1_0_q#1"
    assert second["context"] == passage + "\n\nQuestion: When was she born?\nAnswer: Ada was born in 1815"
    assert user_reply(second) == ("Did she have siblings?", "CANNOTANSWER")


@pytest.mark.parametrize(
    "change,problem",
    [
        (
            {"orig_answers": {"texts": ["only one"], "answer_starts": [0]}},
            "field 'orig_answers.texts' has 1 answers for 2 questions",
        ),
        ({"turn_ids": ["a"]}, "field 'turn_ids' has 1 ids for 2 questions"),
        ({"context": None}, "missing field 'context' expected by schema quac"),
    ],
)
def test_quac_bad_dialogues_name_file_row_and_key(change: dict, problem: str) -> None:
    with pytest.raises(MenagerieError) as info:
        normalize([QUAC, {**QUAC, **change}], "quac", "quac", "quac.parquet")
    assert str(info.value).startswith("quac.parquet row 2 (id C_1_0): ") and problem in str(info.value)


# ---------------------------------------------------------------------------------------------- CNN/DM


def test_cnn_dailymail_summarizes_the_article() -> None:
    row = {"id": "42c027e4", "article": "LONDON (CNN) -- A long article.", "highlights": "Short summary ."}
    assert normalize([row], "cnn_dailymail", "cnn", "c") == [
        {
            "id": "42c027e4",
            "source": "cnn",
            "context": "LONDON (CNN) -- A long article.",
            "messages": [
                {"role": "user", "content": CNN_DAILYMAIL_INSTRUCTION},
                {"role": "assistant", "content": "Short summary ."},
            ],
        }
    ]
    with pytest.raises(
        MenagerieError,
        match=r"^c row 1 \(id x\): missing field 'highlights' expected by "
        r"schema cnn_dailymail \(dataset 'cnn'\)$",
    ):
        normalize([{"id": "x", "article": "a"}], "cnn_dailymail", "cnn", "c")


# ------------------------------------------------------------------------------------- the released Birbal set


@pytest.mark.parametrize(
    "question",
    [
        "### Instruction:\nSummarize the article.\n\n### Input:\nA long article.\n\n### Response:\n",
        "### Input:\nWhat is 2 + 2?\n\n### Response:\n",
    ],
)
def test_birbal_qa_round_trips_through_the_birbal_format(question: str) -> None:
    [row] = normalize([{"question": question, "answer": "4"}], "birbal_qa", "bb", "train_dataset.json")
    text = "".join(t for t, _ in render_segments(row, "birbal", "</s>", add_eos=False))
    assert text == question + "4"


@pytest.mark.parametrize(
    "question,problem",
    [
        ("### Input:\nx\n\n### Response:", "field 'question' expected to end with '### Response:\\n'"),
        ("### Instruction:\nx\n\n### Response:\n", "has an instruction block but no '### Input:\\n' block after it"),
        ("Just text\n\n### Response:\n", "field 'question' expected a '### Input:\\n' block"),
    ],
)
def test_birbal_qa_malformed_prompts_name_file_row_and_key(question: str, problem: str) -> None:
    with pytest.raises(MenagerieError) as info:
        normalize([{"question": question, "answer": "a"}], "birbal_qa", "bb", "train_dataset.json")
    assert str(info.value).startswith("train_dataset.json row 1: ") and problem in str(info.value)


# ------------------------------------------------------------------------------------- real samples (opt-in)


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (opt-in real benchmark samples)")
@pytest.mark.parametrize("name,rows", [("ARC-Challenge-Test.jsonl", 1150), ("ARC-Challenge-Dev.jsonl", 294)])
def test_openbookqa_loader_reads_the_real_arc_files(name: str, rows: int) -> None:
    """ARC's release uses OpenBookQA's AllenAI layout (question{stem, choices[{text, label}]}, answerKey)."""
    path = SHARED / "arc" / name
    raw = read_rows(path)
    canonical = normalize(raw, "openbookqa", "arc", str(path))
    assert len(canonical) == len(raw) == rows
    for source, row in zip(raw, canonical):
        prompt, reply = user_reply(row)
        assert row["id"] == source["id"] and reply == source["answerKey"]
        labels = [c["label"] for c in source["question"]["choices"]]
        assert prompt.splitlines()[-len(labels) :] == [
            f"{c['label']}. {c['text']}" for c in source["question"]["choices"]
        ]
        assert re.match(re.escape(source["question"]["stem"]), prompt)
