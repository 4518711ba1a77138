"""Generated datasets: determinism, real schemas, verifiable answers, and the held-out split."""

from __future__ import annotations

import hashlib
import re

import pytest

from menagerie.data.generate import generate, is_held_out

FACTORS = {"meter": 100, "kilometer": 1000, "kilogram": 1000, "hour": 60, "minute": 60, "liter": 1000}
UNIT_RE = re.compile(r"(\d+) (meter|kilometer|kilogram|hour|minute|liter)s?\b")
PAIRS = [
    ("arithmetic", "tulu_messages"),
    ("arithmetic", "open_platypus"),
    ("unit_conversion", "tulu_messages"),
    ("unit_conversion", "open_platypus"),
    ("arithmetic", "lima"),
    ("unit_conversion", "lima"),
    ("arithmetic", "mathinstruct"),
    ("unit_conversion", "mathinstruct"),
    ("arithmetic_preferences", "ultrafeedback"),
    ("unit_conversion_preferences", "ultrafeedback"),
    ("mixed_eval", "eval_exact"),
]
# sha256[:12] of repr(generate(...)) for two existing datasets, computed with generate.py before the lima and
# mathinstruct schemas were added
OPEN_PLATYPUS_300_SEED_14, TULU_300_SEED_11 = "0e5d4b0550d6", "9fa0fdb211d6"
FIELDS = {
    "tulu_messages": {"dataset", "id", "messages"},
    "open_platypus": {"instruction", "input", "output", "data_source"},
    "lima": {"conversations", "source"},
    "mathinstruct": {"instruction", "output", "source"},
    "ultrafeedback": {"prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected"},
    "eval_exact": {"id", "question", "answer"},
}


def solve(question: str) -> tuple[str, int]:
    """Independently recover (canonical key, answer) from the question text alone."""
    unit = UNIT_RE.search(question)
    if unit:
        value, name = int(unit.group(1)), unit.group(2)
        code = {
            "meter": "m-cm",
            "kilometer": "km-m",
            "kilogram": "kg-g",
            "hour": "h-min",
            "minute": "min-s",
            "liter": "l-ml",
        }[name]
        return f"unit:{code}:{value}", value * FACTORS[name]
    a, b = (int(n) for n in re.findall(r"\d+", question))
    q = question.lower()
    if "subtract" in q:
        return f"sub:{b}:{a}", b - a
    if any(w in q for w in (" - ", "gives", "sold")):
        return f"sub:{a}:{b}", a - b
    if any(w in q for w in (" x ", "multiply", "each", "rows of")):
        return f"mul:{a}:{b}", a * b
    assert any(w in q for w in (" + ", "plus", "sum", "more")), question
    return f"add:{min(a, b)}:{max(a, b)}", a + b


def final_number(text: str) -> int:
    program = re.fullmatch(r"print\((\d+) ([-+*]) (\d+)\)", text)  # MathInstruct program-of-thought rows
    if program:
        a, op, b = int(program.group(1)), program.group(2), int(program.group(3))
        return {"+": a + b, "-": a - b, "*": a * b}[op]
    return int(re.findall(r"-?\d+", text)[-1])


def question_and_reply(row: dict, schema: str) -> tuple[str, str]:
    if schema == "tulu_messages":
        return row["messages"][0]["content"], row["messages"][1]["content"]
    if schema == "open_platypus":
        return row["input"] or row["instruction"], row["output"]
    if schema == "lima":
        return row["conversations"][0], row["conversations"][1]
    if schema == "mathinstruct":
        return row["instruction"], row["output"]
    if schema == "ultrafeedback":
        return row["prompt"], row["chosen"][1]["content"]
    return row["question"], row["answer"]


@pytest.mark.parametrize("generator,schema", PAIRS)
def test_deterministic_and_seed_sensitive(generator: str, schema: str) -> None:
    first = generate(generator, 50, 7, schema)
    assert first == generate(generator, 50, 7, schema)
    assert first != generate(generator, 50, 8, schema)
    assert len(first) == 50


@pytest.mark.parametrize("generator,schema", PAIRS)
def test_rows_use_the_real_field_names_and_answers_check_out(generator: str, schema: str) -> None:
    rows = generate(generator, 400, 3, schema)
    keys = set()
    for row in rows:
        assert set(row) == FIELDS[schema]
        question, reply = question_and_reply(row, schema)
        key, answer = solve(question)
        keys.add(key)
        assert final_number(reply) == answer, (question, reply)
        assert len(reply) < 100
    assert len(keys) == len(rows), "a generator emitted the same problem twice"


def test_tulu_rows() -> None:
    row = generate("arithmetic", 5, 1, "tulu_messages")[2]
    assert row["dataset"] == "menagerie_arithmetic" and row["id"] == "arithmetic_2"
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["content"].endswith(f"The answer is {final_number(row['messages'][1]['content'])}.")


def test_open_platypus_uses_input_for_about_a_third_of_rows() -> None:
    rows = generate("arithmetic", 1000, 5, "open_platypus")
    with_input = [r for r in rows if r["input"]]
    assert 200 <= len(with_input) <= 400
    assert all(r["instruction"] and not re.search(r"\d", r["instruction"]) for r in with_input)
    assert all(r["data_source"] == "menagerie_arithmetic" for r in rows)


def test_ultrafeedback_rows_pair_a_correct_and_a_plausible_wrong_answer() -> None:
    for row in generate("arithmetic_preferences", 300, 2, "ultrafeedback") + generate(
        "unit_conversion_preferences", 300, 2, "ultrafeedback"
    ):
        assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
        user = {"role": "user", "content": row["prompt"]}
        assert row["chosen"][0] == user and row["rejected"][0] == user
        assert row["chosen"][1]["role"] == row["rejected"][1]["role"] == "assistant"
        _, answer = solve(row["prompt"])
        wrong = final_number(row["rejected"][1]["content"])
        assert wrong != answer and wrong >= 0
        assert (row["score_chosen"], row["score_rejected"]) == (10.0, 2.0)


def test_eval_answers_are_strings() -> None:
    rows = generate("mixed_eval", 200, 99, "eval_exact")
    assert all(isinstance(r["answer"], str) and r["answer"].isdigit() for r in rows)
    kinds = {solve(r["question"])[0].split(":")[0] for r in rows}
    assert kinds == {"add", "sub", "mul", "unit"}


def test_held_out_problems_never_reach_training_generators() -> None:
    train_keys: set[str] = set()
    for generator, schema, count in [
        ("arithmetic", "tulu_messages", 6000),
        ("arithmetic", "open_platypus", 3000),
        ("unit_conversion", "tulu_messages", 1400),
        ("arithmetic_preferences", "ultrafeedback", 3000),
        ("unit_conversion_preferences", "ultrafeedback", 1000),
    ]:
        for row in generate(generator, count, 17, schema):
            train_keys.add(solve(question_and_reply(row, schema)[0])[0])
    eval_keys = {solve(row["question"])[0] for row in generate("mixed_eval", 2000, 17, "eval_exact")}
    assert len(eval_keys) == 2000
    assert not train_keys & eval_keys
    assert all(is_held_out(k) for k in eval_keys) and not any(is_held_out(k) for k in train_keys)


def test_held_out_rule_is_sha256_mod_5() -> None:
    for key in ("add:23:58", "sub:80:17", "mul:7:34", "unit:m-cm:7"):
        assert is_held_out(key) == (int(hashlib.sha256(key.encode()).hexdigest(), 16) % 5 == 0)


@pytest.mark.parametrize(
    "generator,schema",
    [
        ("mixed_eval", "tulu_messages"),
        ("arithmetic", "ultrafeedback"),
        ("arithmetic_preferences", "open_platypus"),
        ("unit_conversion", "eval_exact"),
    ],
)
def test_nonsense_pairs_are_rejected_naming_both(generator: str, schema: str) -> None:
    with pytest.raises(ValueError) as info:
        generate(generator, 10, 1, schema)
    assert generator in str(info.value) and schema in str(info.value)


def test_unknown_generator_schema_and_bad_count() -> None:
    with pytest.raises(ValueError, match="unknown generator 'algebra'"):
        generate("algebra", 10, 1, "tulu_messages")
    with pytest.raises(ValueError, match="unknown schema 'alpaca'"):
        generate("arithmetic", 10, 1, "alpaca")
    with pytest.raises(ValueError, match="positive integer"):
        generate("arithmetic", 0, 1, "tulu_messages")


def test_count_beyond_the_problem_space_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"generator 'mixed_eval' can make at most \d+ distinct problems, 100000"):
        generate("mixed_eval", 100000, 1, "eval_exact")


def test_swapped_addends_fall_on_the_same_side_of_the_split():
    """'a + b' in training and 'b + a' held out would be a leak the contamination gate flags (it did, once)."""
    from menagerie.data.generate import _pool

    held = {(p.a, p.b) for p in _pool("add", True)}
    train = {(p.a, p.b) for p in _pool("add", False)}
    assert held and train
    assert not {(b, a) for a, b in held} & train


def test_mathinstruct_rows_mix_chain_of_thought_and_program_of_thought() -> None:
    rows = generate("arithmetic", 1000, 5, "mathinstruct")
    pot = [r for r in rows if r["source"] == "data/PoT/menagerie_arithmetic.json"]
    cot = [r for r in rows if r["source"] == "data/CoT/menagerie_arithmetic.json"]
    assert len(pot) + len(cot) == 1000 and 180 <= len(pot) <= 320
    assert all(r["output"].startswith("print(") for r in pot)
    assert all("The answer is" in r["output"] and "print(" not in r["output"] for r in cot)


def test_lima_rows_are_one_exchange_with_a_source() -> None:
    rows = generate("unit_conversion", 50, 2, "lima")
    assert all(len(r["conversations"]) == 2 and r["source"] == "menagerie_unit_conversion" for r in rows)


def test_new_schemas_leave_existing_outputs_unchanged() -> None:
    """Adding schemas must not move the rows the existing datasets (and their recorded hashes) are built from."""
    digest = hashlib.sha256(repr(generate("arithmetic", 300, 14, "open_platypus")).encode()).hexdigest()
    tulu = hashlib.sha256(repr(generate("arithmetic", 300, 11, "tulu_messages")).encode()).hexdigest()
    assert (digest[:12], tulu[:12]) == (OPEN_PLATYPUS_300_SEED_14, TULU_300_SEED_11)
