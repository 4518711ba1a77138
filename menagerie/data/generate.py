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
from functools import cache

HELD_OUT_MODULUS = 5


@dataclass(frozen=True)
class Conversion:
    code: str
    unit: tuple[str, str]  # (singular, plural) of the unit converted from
    target: str  # plural of the unit converted to
    factor: int
    wrong_factor: int  # a plausible mistake, used for rejected preference answers


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
    kind: str  # add | sub | mul | unit
    a: int  # first operand (the value, for unit conversions)
    b: int  # second operand (the factor, for unit conversions)
    answer: int
    conversion: Conversion | None = None


def _hash(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16)


def is_held_out(key: str) -> bool:
    """True when the problem with canonical `key` is reserved for evaluation."""
    return _hash(key) % HELD_OUT_MODULUS == 0


@cache
def _pool(kind: str, held_out: bool) -> tuple[Problem, ...]:
    """All problems of one kind ('add', 'sub', 'mul' or a conversion code) on one side of the split."""
    two_digit = range(10, 100)
    if kind == "add":
        # addition commutes: one problem per unordered pair, keyed with ordered operands, so "a + b" and "b + a"
        # can never land on different sides of the split; the written order still varies (from the key's hash)
        space = [
            Problem(key, "add", *((a, b) if _hash(key) % 2 else (b, a)), a + b)
            for a in two_digit
            for b in two_digit
            if a <= b
            for key in [f"add:{a}:{b}"]
        ]
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
    "add": (
        "What is {a} + {b}?",
        "Compute {a} plus {b}.",
        "What is the sum of {a} and {b}?",
        "{name} has {a} {item} and buys {b} more. How many {item} does {pron} have now?",
        "A basket holds {a} {item}. {name} puts in {b} more. How many {item} are in the basket now?",
    ),
    "sub": (
        "What is {a} - {b}?",
        "Subtract {b} from {a}.",
        "{name} has {a} {item} and gives {b} of them away. How many {item} does {pron} have left?",
        "A shop had {a} {item} and sold {b} of them. How many {item} are left?",
    ),
    "mul": (
        "What is {a} x {b}?",
        "Multiply {a} by {b}.",
        "{name} buys {a} bags with {b} {item} in each bag. How many {item} does {pron} buy in total?",
        "There are {a} rows of {b} {item}. How many {item} are there?",
    ),
    "unit": (
        "How many {target} are in {a} {unit}?",
        "Convert {a} {unit} to {target}.",
        "{a} {unit} is how many {target}?",
        "Express {a} {unit} in {target}.",
    ),
}
SYMBOLS = {"add": "+", "sub": "-", "mul": "x"}
PLATYPUS_INSTRUCTIONS = (
    "Solve the word problem.",
    "Answer the question with a number.",
    "Solve the following problem and give the final answer.",
)
PLATYPUS_INPUT_SHARE = 0.3
MATHINSTRUCT_POT_SHARE = 0.25  # MathInstruct's program-of-thought rows (data/PoT/...) are GPT-4 written
PYTHON_OPS = {"add": "+", "sub": "-", "mul": "*", "unit": "*"}


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


def _program(problem: Problem) -> str:
    """A program-of-thought answer (MathInstruct's PoT rows are Python that prints the result)."""
    a, b = (max(problem.a, problem.b), min(problem.a, problem.b)) if problem.kind == "sub" else (problem.a, problem.b)
    return f"print({a} {PYTHON_OPS[problem.kind]} {b})"


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
        return {
            "dataset": f"menagerie_{generator}",
            "id": f"{generator}_{index}",
            "messages": _user_assistant(question, answer),
        }
    if schema == "open_platypus":
        if rng.random() < PLATYPUS_INPUT_SHARE:
            instruction, extra = rng.choice(PLATYPUS_INSTRUCTIONS), question
        else:
            instruction, extra = question, ""
        return {"instruction": instruction, "input": extra, "output": answer, "data_source": f"menagerie_{generator}"}
    if schema == "lima":
        return {"conversations": [question, answer], "source": f"menagerie_{generator}"}
    if schema == "mathinstruct":
        if rng.random() < MATHINSTRUCT_POT_SHARE:
            return {
                "instruction": question,
                "output": _program(problem),
                "source": f"data/PoT/menagerie_{generator}.json",
            }
        return {"instruction": question, "output": answer, "source": f"data/CoT/menagerie_{generator}.json"}
    if schema == "ultrafeedback":
        return {
            "prompt": question,
            "prompt_id": hashlib.sha256(question.encode()).hexdigest(),
            "chosen": _user_assistant(question, answer),
            "rejected": _user_assistant(question, _wrong_solution(problem, rng)),
            "score_chosen": 10.0,
            "score_rejected": 2.0,
        }
    return {"id": f"{generator}_{index}", "question": question, "answer": str(problem.answer)}


SFT_SCHEMAS = ("tulu_messages", "open_platypus", "lima", "mathinstruct")
# generator -> (groups of problem kinds drawn uniformly, held-out side, schemas it can emit)
GENERATORS: dict[str, tuple[list[tuple[str, ...]], bool, tuple[str, ...]]] = {
    "arithmetic": ([(k,) for k in ARITHMETIC_KINDS], False, SFT_SCHEMAS),
    "unit_conversion": ([(k,) for k in UNIT_KINDS], False, SFT_SCHEMAS),
    "arithmetic_preferences": ([(k,) for k in ARITHMETIC_KINDS], False, ("ultrafeedback",)),
    "unit_conversion_preferences": ([(k,) for k in UNIT_KINDS], False, ("ultrafeedback",)),
    "mixed_eval": ([("add",), ("sub",), ("mul",), UNIT_KINDS], True, ("eval_exact",)),
    "ni_tasks": ([], False, ("natural_instructions",)),  # tiny NI task files (end of this module)
}
SCHEMAS = (*SFT_SCHEMAS, "ultrafeedback", "eval_exact", "natural_instructions")


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
    if generator == "ni_tasks":  # whole tasks; `count` is the number of instances per task
        return _ni_tasks(count, seed)
    rng = random.Random(f"{generator}:{seed}")
    problems = _draw(groups, count, held_out, rng, generator)
    return [_row(generator, schema, i, problem, rng) for i, problem in enumerate(problems)]


# ---------------------------------------------------------------------------------------------- Natural Instructions
# Tiny tasks in the real NI task-file schema (allenai/natural-instructions tasks/*.json, plus `task_name`) for
# Birbal's NI sampling (menagerie/data/ni_sampling.py): one-word-answer (exact-match) and free-text (generation)
# tasks from easy to hard for a 135M model, and one non-English and one MMLU-derived task the selection drops.
# No arithmetic: these rows reach training mixtures, the held-out eval problems must not.
_NI_THINGS = ("The movie", "This book", "The meal", "The concert", "This phone", "The hotel", "The game", "This song")
_NI_GOOD, _NI_BAD = ("wonderful", "excellent", "great", "lovely"), ("terrible", "awful", "boring", "horrible")
_NI_SUBJECTS = ("the cat", "my brother", "the old man", "a small dog", "the teacher", "our neighbor", "the baby")
_NI_VERBS = ("saw", "liked", "painted", "found", "carried", "washed")
_NI_OBJECTS = ("a red ball", "the blue car", "an old book", "the green door", "a wooden box", "the big tree")
_NI_PLACES = ("room", "house", "city", "garden", "kitchen")
_NI_OPPOSITES = (
    ("hot", "cold"),
    ("big", "small"),
    ("happy", "sad"),
    ("fast", "slow"),
    ("light", "dark"),
    ("early", "late"),
    ("full", "empty"),
    ("hard", "soft"),
    ("old", "new"),
    ("rich", "poor"),
    ("strong", "weak"),
    ("wet", "dry"),
    ("loud", "quiet"),
    ("clean", "dirty"),
    ("busy", "calm"),
)
_NI_CAPITALS = (
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Germany", "Berlin"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Russia", "Moscow"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Austria", "Vienna"),
    ("Ireland", "Dublin"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Cuba", "Havana"),
    ("Poland", "Warsaw"),
    ("Hungary", "Budapest"),
    ("Finland", "Helsinki"),
    ("Chile", "Santiago"),
)
_NI_FR_THINGS = ("Le film", "Le livre", "Le repas", "Le concert", "Le jeu", "Le voyage")
_NI_FR_GOOD, _NI_FR_BAD = ("merveilleux", "excellent", "superbe", "génial"), ("horrible", "ennuyeux", "affreux", "nul")
_NI_SHOTS = 3  # Positive Examples per task


def _ni_sentences() -> list[str]:
    return [f"{s} {v} {o}" for s in _NI_SUBJECTS for v in _NI_VERBS for o in _NI_OBJECTS]


def _ni_capitalized(text: str) -> str:
    return text[0].upper() + text[1:]


# task_name, Definition, Categories, input language, Source, every (input, output) pair the task can hold. Inputs
# have at least five words (Birbal's filter) and differ across tasks (its input dedup).
_NI_TASKS = (
    (
        "task901_tiny_review_sentiment_classification",
        "Given a one-sentence review, answer Positive if the reviewer liked it and Negative otherwise.",
        ["Sentiment Analysis"],
        "English",
        "menagerie",
        lambda: [
            (f"{t} was {a}, in my opinion.", "Positive" if a in _NI_GOOD else "Negative")
            for t in _NI_THINGS
            for a in _NI_GOOD + _NI_BAD
        ],
    ),
    (
        "task902_tiny_first_word_extraction",
        "Write the first word of the given sentence.",
        ["Information Extraction"],
        "English",
        "menagerie",
        lambda: [(f"{_ni_capitalized(s)}.", s.split()[0].capitalize()) for s in _ni_sentences()],
    ),
    (
        "task903_tiny_antonym_generation",
        "Write the word that means the opposite of the adjective in the sentence.",
        ["Word Semantics"],
        "English",
        "menagerie",
        lambda: [
            (f"It was very {a} in the {place}.", b)
            for x, y in _NI_OPPOSITES
            for a, b in ((x, y), (y, x))
            for place in _NI_PLACES
        ],
    ),
    (
        "task904_tiny_sentence_copying",
        "Repeat the given sentence exactly as it is written.",
        ["Text Completion"],
        "English",
        "menagerie",
        lambda: [(f"{_ni_capitalized(s)} yesterday.",) * 2 for s in _ni_sentences()],
    ),
    (
        "task905_tiny_word_order_reversal",
        "Write the words of the given sentence in reverse order.",
        ["Text Manipulation"],
        "English",
        "menagerie",
        lambda: [(s, " ".join(reversed(s.split()))) for s in _ni_sentences()],
    ),
    (
        "task906_tiny_sentence_letter_reversal",
        "Write the given sentence backwards, letter by letter.",
        ["Text Manipulation"],
        "English",
        "menagerie",
        lambda: [(f"{s} today", f"{s} today"[::-1]) for s in _ni_sentences()],
    ),
    (
        "task907_tiny_french_review_sentiment_classification",
        "Given a one-sentence French review, answer Positif if the reviewer liked it and Négatif otherwise.",
        ["Sentiment Analysis"],
        "French",
        "menagerie",
        lambda: [
            (f"{t} était {a}, à mon avis.", "Positif" if a in _NI_FR_GOOD else "Négatif")
            for t in _NI_FR_THINGS
            for a in _NI_FR_GOOD + _NI_FR_BAD
        ],
    ),
    (
        "task908_tiny_mmmlu_answer_generation_geography",
        "Answer the question with the name of a city.",
        ["Question Answering"],
        "English",
        "mmmlu",
        lambda: [
            pair
            for country, city in _NI_CAPITALS
            for pair in (
                (f"What is the capital city of {country}?", city),
                (f"Which city is the capital of {country}?", city),
            )
        ],
    ),
)


def _ni_tasks(count: int, seed: int) -> list[dict]:
    """One row per task: the NI task-file fields, `_NI_SHOTS` Positive Examples and `count` Instances."""
    tasks = []
    for name, text, categories, language, source, space in _NI_TASKS:
        pairs = space()
        if count + _NI_SHOTS > len(pairs):
            raise ValueError(
                f"generator 'ni_tasks' can make at most {len(pairs) - _NI_SHOTS} instances per task "
                f"({name}), {count} requested"
            )
        random.Random(f"ni_tasks:{seed}:{name}").shuffle(pairs)
        examples, instances = pairs[:_NI_SHOTS], pairs[_NI_SHOTS : _NI_SHOTS + count]
        number = name.split("_", 1)[0]
        tasks.append(
            {
                "task_name": name,
                "Contributors": ["menagerie"],
                "Source": [source],
                "URL": [],
                "Categories": categories,
                "Reasoning": [],
                "Definition": [text],
                "Input_language": [language],
                "Output_language": [language],
                "Instruction_language": ["English"],
                "Domains": ["Miscellaneous"],
                "Positive Examples": [
                    {"input": i, "output": o, "explanation": f"The answer is: {o}"} for i, o in examples
                ],
                "Negative Examples": [],
                "Instances": [
                    {
                        "id": f"{number}-{hashlib.sha256(f'{name}:{i}'.encode()).hexdigest()[:32]}",
                        "input": i,
                        "output": [o],
                    }
                    for i, o in instances
                ],
                "Instance License": ["CC BY 4.0"],
            }
        )
    return tasks
