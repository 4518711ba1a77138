"""Seeded generators of small datasets with verifiable integer answers, in the real public schemas.

Problems are integer arithmetic (2-digit addition and subtraction, 1-digit x 2-digit multiplication)
and unit conversions. Each problem has a canonical key (e.g. "add:23:58", "unit:m-cm:7"); a problem
is *held out* iff sha256(key) % 5 == 0. Training generators emit only problems that are not held out
and `mixed_eval` emits only held-out ones, so evaluation questions never appear in training data,
whatever the phrasing (keys of commutative operations order their operands). Output depends only on (generator, count, seed, schema).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache

HELD_OUT_MODULUS = 5


@dataclass(frozen=True)
class Conversion:
    code: str
    unit: tuple[str, str]    # (singular, plural) of the unit converted from
    target: str              # plural of the unit converted to
    factor: int
    wrong_factor: int        # a plausible mistake, used for rejected preference answers


CONVERSIONS: tuple[Conversion, ...] = (
    Conversion("m-cm", ("meter", "meters"), "centimeters", 100, 10),
    Conversion("km-m", ("kilometer", "kilometers"), "meters", 1000, 100),
    Conversion("kg-g", ("kilogram", "kilograms"), "grams", 1000, 100),
    Conversion("h-min", ("hour", "hours"), "minutes", 60, 100),
    Conversion("min-s", ("minute", "minutes"), "seconds", 60, 100),
    Conversion("l-ml", ("liter", "liters"), "milliliters", 1000, 100),
)
UNIT_VALUES = range(1, 301)


@dataclass(frozen=True)
class Problem:
    key: str
    kind: str                # add | sub | mul | unit
    a: int                   # first operand (the value, for unit conversions)
    b: int                   # second operand (the factor, for unit conversions)
    answer: int
    conversion: Conversion | None = None


def _hash(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16)


def is_held_out(key: str) -> bool:
    """True when the problem with canonical `key` is reserved for evaluation."""
    return _hash(key) % HELD_OUT_MODULUS == 0


@lru_cache(maxsize=None)
def _pool(kind: str, held_out: bool) -> tuple[Problem, ...]:
    """All problems of one kind ('add', 'sub', 'mul' or a conversion code) on one side of the split."""
    two_digit = range(10, 100)
    if kind == "add":
        # addition commutes: one problem per unordered pair, keyed with ordered operands, so "a + b" and "b + a"
        # can never land on different sides of the split; the written order still varies (from the key's hash)
        space = [Problem(key, "add", *((a, b) if _hash(key) % 2 else (b, a)), a + b)
                 for a in two_digit for b in two_digit if a <= b for key in [f"add:{a}:{b}"]]
    elif kind == "sub":
        space = [Problem(f"sub:{a}:{b}", "sub", a, b, a - b) for a in two_digit for b in two_digit if a > b]
    elif kind == "mul":
        space = [Problem(f"mul:{a}:{b}", "mul", a, b, a * b) for a in range(2, 10) for b in two_digit]
    else:
        conv = next(c for c in CONVERSIONS if c.code == kind)
        space = [Problem(f"unit:{conv.code}:{v}", "unit", v, conv.factor, v * conv.factor, conv) for v in UNIT_VALUES]
    return tuple(p for p in space if is_held_out(p.key) == held_out)


ARITHMETIC_KINDS = ("add", "sub", "mul")
UNIT_KINDS = tuple(c.code for c in CONVERSIONS)


def _draw(groups: list[tuple[str, ...]], count: int, held_out: bool, rng: random.Random, who: str) -> list[Problem]:
    """Draw `count` distinct problems, picking a non-exhausted group uniformly for each row."""
    queues = [[p for kind in group for p in _pool(kind, held_out)] for group in groups]
    available = sum(len(q) for q in queues)
    if count > available:
        raise ValueError(f"generator '{who}' can make at most {available} distinct problems, {count} requested")
    for queue in queues:
        rng.shuffle(queue)
    seen: set[str] = set()
    problems: list[Problem] = []
    while len(problems) < count:
        problem = rng.choice([q for q in queues if q]).pop()
        if problem.key not in seen:
            seen.add(problem.key)
            problems.append(problem)
    return problems


NAMES = (("Tom", "he"), ("Ana", "she"), ("Sam", "he"), ("Maya", "she"), ("Ravi", "he"), ("Lena", "she"))
ITEMS = ("apples", "marbles", "stickers", "pencils", "coins", "cards", "books", "shells")
TEMPLATES = {
    "add": ("What is {a} + {b}?", "Compute {a} plus {b}.", "What is the sum of {a} and {b}?",
            "{name} has {a} {item} and buys {b} more. How many {item} does {pron} have now?",
            "A basket holds {a} {item}. {name} puts in {b} more. How many {item} are in the basket now?"),
    "sub": ("What is {a} - {b}?", "Subtract {b} from {a}.",
            "{name} has {a} {item} and gives {b} of them away. How many {item} does {pron} have left?",
            "A shop had {a} {item} and sold {b} of them. How many {item} are left?"),
    "mul": ("What is {a} x {b}?", "Multiply {a} by {b}.",
            "{name} buys {a} bags with {b} {item} in each bag. How many {item} does {pron} buy in total?",
            "There are {a} rows of {b} {item}. How many {item} are there?"),
    "unit": ("How many {target} are in {a} {unit}?", "Convert {a} {unit} to {target}.",
             "{a} {unit} is how many {target}?", "Express {a} {unit} in {target}."),
}
SYMBOLS = {"add": "+", "sub": "-", "mul": "x"}
PLATYPUS_INSTRUCTIONS = ("Solve the word problem.", "Answer the question with a number.",
                         "Solve the following problem and give the final answer.")
PLATYPUS_INPUT_SHARE = 0.3


def _question(problem: Problem, rng: random.Random) -> str:
    template = rng.choice(TEMPLATES[problem.kind])
    name, pron = rng.choice(NAMES)
    fields = {"a": problem.a, "b": problem.b, "name": name, "pron": pron, "item": rng.choice(ITEMS)}
    if problem.conversion is not None:
        fields["unit"] = problem.conversion.unit[0 if problem.a == 1 else 1]
        fields["target"] = problem.conversion.target
    return template.format(**fields)


def _solution(problem: Problem, result: int, kind: str | None = None, factor: int | None = None) -> str:
    """Short worked answer ending with the final number; `kind`/`factor` override for wrong answers."""
    kind = kind or problem.kind
    if problem.conversion is not None:
        conv, factor = problem.conversion, factor or problem.b
        unit = conv.unit[0 if problem.a == 1 else 1]
        return f"{problem.a} {unit} is {problem.a} x {factor} = {result} {conv.target}. The answer is {result}."
    a, b = (max(problem.a, problem.b), min(problem.a, problem.b)) if kind == "sub" else (problem.a, problem.b)
    return f"{a} {SYMBOLS[kind]} {b} = {result}. The answer is {result}."


def _wrong_solution(problem: Problem, rng: random.Random) -> str:
    """A plausible wrong answer: off by a small nonzero amount, or the wrong operation / factor."""
    if rng.random() < 0.5:
        delta = rng.choice((-10, -3, -2, -1, 1, 2, 3, 10))
        wrong = problem.answer + delta if problem.answer + delta >= 0 else problem.answer + abs(delta)
        return _solution(problem, wrong)
    if problem.conversion is not None:
        factor = problem.conversion.wrong_factor
        return _solution(problem, problem.a * factor, factor=factor)
    if problem.kind == "add":
        return _solution(problem, abs(problem.a - problem.b), kind="sub")
    return _solution(problem, problem.a + problem.b, kind="add")


def _user_assistant(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _row(generator: str, schema: str, index: int, problem: Problem, rng: random.Random) -> dict:
    question = _question(problem, rng)
    answer = _solution(problem, problem.answer)
    if schema == "tulu_messages":
        return {"dataset": f"menagerie_{generator}", "id": f"{generator}_{index}",
                "messages": _user_assistant(question, answer)}
    if schema == "open_platypus":
        if rng.random() < PLATYPUS_INPUT_SHARE:
            instruction, extra = rng.choice(PLATYPUS_INSTRUCTIONS), question
        else:
            instruction, extra = question, ""
        return {"instruction": instruction, "input": extra, "output": answer,
                "data_source": f"menagerie_{generator}"}
    if schema == "ultrafeedback":
        return {"prompt": question, "prompt_id": hashlib.sha256(question.encode()).hexdigest(),
                "chosen": _user_assistant(question, answer),
                "rejected": _user_assistant(question, _wrong_solution(problem, rng)),
                "score_chosen": 10.0, "score_rejected": 2.0}
    return {"id": f"{generator}_{index}", "question": question, "answer": str(problem.answer)}


# generator -> (groups of problem kinds drawn uniformly, held-out side, schemas it can emit)
GENERATORS: dict[str, tuple[list[tuple[str, ...]], bool, tuple[str, ...]]] = {
    "arithmetic": ([(k,) for k in ARITHMETIC_KINDS], False, ("tulu_messages", "open_platypus")),
    "unit_conversion": ([(k,) for k in UNIT_KINDS], False, ("tulu_messages", "open_platypus")),
    "arithmetic_preferences": ([(k,) for k in ARITHMETIC_KINDS], False, ("ultrafeedback",)),
    "unit_conversion_preferences": ([(k,) for k in UNIT_KINDS], False, ("ultrafeedback",)),
    "mixed_eval": ([("add",), ("sub",), ("mul",), UNIT_KINDS], True, ("eval_exact",)),
}
SCHEMAS = ("tulu_messages", "open_platypus", "ultrafeedback", "eval_exact")


def generate(generator: str, count: int, seed: int, schema: str) -> list[dict]:
    """Return `count` rows of generated problems in `schema`, deterministic in all four arguments.

    Raises ValueError for an unknown generator or schema, a generator/schema pair that makes no sense
    (e.g. mixed_eval as tulu_messages), or a count larger than the number of distinct problems.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator '{generator}' (known: {', '.join(GENERATORS)})")
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema '{schema}' (known: {', '.join(SCHEMAS)})")
    groups, held_out, schemas = GENERATORS[generator]
    if schema not in schemas:
        raise ValueError(f"generator '{generator}' cannot emit schema '{schema}' (it emits: {', '.join(schemas)})")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"generator '{generator}': count must be a positive integer, got {count!r}")
    rng = random.Random(f"{generator}:{seed}")
    problems = _draw(groups, count, held_out, rng, generator)
    return [_row(generator, schema, i, problem, rng) for i, problem in enumerate(problems)]
