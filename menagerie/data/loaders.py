"""Loaders: one raw row of a dataset's real schema -> canonical rows (see menagerie.data.sources).

Every loader takes a `RawRow` (field access that names the origin, the row index and the schema in its
errors) and the dataset's config name, and returns a list of canonical rows: most schemas give one row
per raw row; a Natural Instructions task file gives one per instance and a QuAC dialogue one per turn.

Canonical sft rows: {"id", "source", "messages", "context"?, "origin"?}. `context` is the row's input
(an Alpaca/Open-Platypus `input`, a passage, an article); `origin` is the row's sub-source inside its
dataset (Tulu's `dataset`, Open-Platypus's `data_source`, MathInstruct's `source`, LIMA's `source`, the
Natural Instructions task) — what mixture items select with `origins` / `exclude_origins`.

Schemas and where their layout comes from:
  tulu_messages        allenai/tulu-v2-sft-mixture: dataset, id, messages[{role, content}]
  open_platypus        garage-bAInd/Open-Platypus: instruction, input, output, data_source
  ultrafeedback        HuggingFaceH4/ultrafeedback_binarized: prompt, prompt_id, chosen, rejected, scores
  eval_exact           generated held-out problems: id, question, answer
  lima                 GAIR/lima: conversations (alternating user/assistant strings), source
  natural_instructions allenai/natural-instructions task files: Definition, Positive Examples,
                       Instances[{id, input, output: [..]}] (one task per raw row; `task_name` optional)
  mathinstruct         TIGER-Lab/MathInstruct: instruction, output, source
  openbookqa           allenai/openbookqa (hub: question_stem, choices{text, label}, answerKey, fact1?) or
                       the AllenAI jsonl release (question{stem, choices[{text, label}]}, answerKey), as ARC
  quac                 allenai/quac (hub): dialogue_id, wikipedia_page_title, background, section_title, context,
                       turn_ids, questions, orig_answers{texts, answer_starts}, answers, followups, yesnos
  cnn_dailymail        abisee/cnn_dailymail: article, highlights, id
  birbal_qa            upaya07/NeurIPS-LLM-data ([BBc] combine_datasets.py output): question (a pre-formatted
                       `### Instruction / ### Input / ### Response` prompt), answer
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

from menagerie.errors import MenagerieError

ROLES = ("system", "user", "assistant")
# Prompt wording this project adds where a schema has no instruction of its own (documented in the README).
CNN_DAILYMAIL_INSTRUCTION = "Summarize the following news article in a few sentences."


# fields that identify a raw row in an error message, in the order they are tried
ID_FIELDS = ("id", "prompt_id", "dialogue_id", "task_name")


class RawRow:
    """Field access for one raw row that reports problems with its location, id, dataset and schema.

    `where` is the row's place ("<file> line N", 1-based, from sources.read_located); `index` (0-based) only
    makes the fallback `<dataset>_<index>` ids. Item and message positions in errors count from 1 as well.
    """

    def __init__(self, row: Any, index: int, schema: str, where: str, dataset: str = "") -> None:
        self.row, self.index, self.schema, self.where, self.dataset = row, index, schema, where, dataset
        if not isinstance(row, dict):
            self.fail(f"expected a mapping of fields, got {type(row).__name__}")

    def fail(self, problem: str, schema_named: bool = False) -> NoReturn:
        ident = next(
            (
                self.row[f]
                for f in ID_FIELDS
                if isinstance(self.row, dict) and isinstance(self.row.get(f), (str, int)) and self.row.get(f) != ""
            ),
            None,
        )
        ident = f" (id {ident})" if ident is not None else ""
        context = [f"dataset '{self.dataset}'"] if self.dataset else []
        context += [] if schema_named else [f"schema {self.schema}"]
        raise MenagerieError(f"{self.where}{ident}: {problem}" + (f" ({', '.join(context)})" if context else ""))

    def require(self, field: str) -> Any:
        if field not in self.row or self.row[field] is None:
            self.fail(f"missing field '{field}' expected by schema {self.schema}", schema_named=True)
        return self.row[field]

    def text(self, field: str) -> str:
        value = self.require(field)
        if not isinstance(value, str):
            self.fail(f"field '{field}' expected a string, got {type(value).__name__}")
        return value

    def optional_text(self, field: str) -> str | None:
        value = self.row.get(field)
        if value is not None and not isinstance(value, str):
            self.fail(f"field '{field}' expected a string, got {type(value).__name__}")
        return value

    def parsed(self, field: str, expected: type) -> Any:
        """The field's value; CSV and some exports store nested values as JSON text."""
        value = self.require(field)
        if isinstance(value, str) and expected is not str:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                self.fail(f"field '{field}' expected {_describe(expected)}, got a string that is not JSON")
        if not isinstance(value, expected):
            self.fail(f"field '{field}' expected {_describe(expected)}, got {type(value).__name__}")
        return value

    def strings(self, field: str, value: Any = None, min_items: int = 1) -> list[str]:
        """A list of strings (`value` when given, else the field), with at least `min_items` items."""
        items = self.parsed(field, list) if value is None else value
        if not isinstance(items, list) or len(items) < min_items:
            self.fail(f"field '{field}' expected a list of at least {min_items} string(s)")
        for position, item in enumerate(items, start=1):
            if not isinstance(item, str):
                self.fail(f"field '{field}' item {position} expected a string, got {type(item).__name__}")
        return items

    def messages(self, field: str) -> list[dict]:
        value = self.parsed(field, list)
        if not value:
            self.fail(f"field '{field}' expected a non-empty list of messages")
        out = []
        for position, message in enumerate(value, start=1):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                self.fail(f"field '{field}' message {position} expected a mapping with 'role' and string 'content'")
            if message.get("role") not in ROLES:
                self.fail(
                    f"field '{field}' message {position} has role {message.get('role')!r}, "
                    f"expected one of {', '.join(ROLES)}"
                )
            out.append({"role": message["role"], "content": message["content"]})
        return out

    def row_id(self, dataset_name: str, *fields: str) -> str:
        for field in fields:
            if self.row.get(field) not in (None, ""):
                return str(self.row[field])
        return f"{dataset_name}_{self.index}"


def _describe(expected: type) -> str:
    return {list: "a list", dict: "a mapping", str: "a string"}.get(expected, expected.__name__)


def _sft(
    row_id: str, dataset_name: str, prompt: str, reply: str, context: str | None = None, origin: str | None = None
) -> dict:
    out = {
        "id": row_id,
        "source": dataset_name,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
    }
    if context and context.strip():
        out["context"] = context
    if origin:
        out["origin"] = origin
    return out


def _with_origin(row: dict, origin: str | None) -> dict:
    if origin:
        row["origin"] = origin
    return row


# ---------------------------------------------------------------------------------------------- schemas


def tulu_messages(r: RawRow, name: str) -> list[dict]:
    row = {"id": r.row_id(name, "id"), "source": name, "messages": r.messages("messages")}
    return [_with_origin(row, r.optional_text("dataset"))]


def open_platypus(r: RawRow, name: str) -> list[dict]:
    return [
        _sft(
            r.row_id(name, "id"),
            name,
            r.text("instruction"),
            r.text("output"),
            context=r.optional_text("input"),
            origin=r.optional_text("data_source"),
        )
    ]


def _split_preference(r: RawRow, field: str) -> tuple[list[dict], str]:
    """(prompt messages, final assistant reply) of a chosen/rejected conversation."""
    value = r.require(field)
    if isinstance(value, str):  # a bare reply, or a conversation stored as JSON text (CSV)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, list):
            return [{"role": "user", "content": r.text("prompt")}], value
    messages = r.messages(field)
    if messages[-1]["role"] != "assistant":
        r.fail(f"field '{field}' expected to end with an assistant message")
    return messages[:-1], messages[-1]["content"]


def ultrafeedback(r: RawRow, name: str) -> list[dict]:
    prompt, chosen = _split_preference(r, "chosen")
    _, rejected = _split_preference(r, "rejected")
    if not prompt:
        prompt = [{"role": "user", "content": r.text("prompt")}]
    return [
        {
            "id": r.row_id(name, "prompt_id", "id"),
            "source": name,
            "messages": prompt,
            "chosen": chosen,
            "rejected": rejected,
        }
    ]


def eval_exact(r: RawRow, name: str) -> list[dict]:
    question, answer = r.text("question"), r.require("answer")
    if not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
        r.fail(f"field 'answer' expected a string or number, got {type(answer).__name__}")
    return [{"id": r.row_id(name, "id"), "question": question, "answer": str(answer)}]


def lima(r: RawRow, name: str) -> list[dict]:
    """Alternating user/assistant turns. A trailing unanswered user turn is dropped, as open-instruct's
    convert_lima_data does ([OI] reformat_datasets.py); fewer than two turns is an error."""
    turns = r.strings("conversations", min_items=2)
    turns = turns[: len(turns) - len(turns) % 2]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(turns)]
    return [_with_origin({"id": r.row_id(name, "id"), "source": name, "messages": messages}, r.optional_text("source"))]


def natural_instructions(r: RawRow, name: str) -> list[dict]:
    """One row per instance: the task's first Definition is the instruction ([BBc] fetch_instruction,
    [OI] convert_super_ni_data), the instance input the context, its first output the reply. Positive
    Examples are checked but not used (Birbal trains zero-shot)."""
    definition = r.require("Definition")
    definitions = r.strings("Definition", [definition] if isinstance(definition, str) else definition)
    examples = r.parsed("Positive Examples", list) if r.row.get("Positive Examples") is not None else []
    for position, example in enumerate(examples, start=1):
        if not isinstance(example, dict) or not all(isinstance(example.get(k), str) for k in ("input", "output")):
            r.fail(f"field 'Positive Examples' item {position} expected a mapping with string 'input' and 'output'")
    instances = r.parsed("Instances", list)
    if not instances:
        r.fail("field 'Instances' expected a non-empty list of instances")
    task = r.optional_text("task_name")
    rows = []
    for position, instance in enumerate(instances):
        where = f"field 'Instances' item {position + 1}"
        if not isinstance(instance, dict):
            r.fail(f"{where} expected a mapping with 'input' and 'output', got {type(instance).__name__}")
        for key in ("input", "output"):
            if instance.get(key) is None:
                r.fail(f"{where}: missing key '{key}'")
        if not isinstance(instance["input"], str):
            r.fail(f"{where}: key 'input' expected a string, got {type(instance['input']).__name__}")
        outputs = instance["output"]
        outputs = [outputs] if isinstance(outputs, str) else outputs
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
            r.fail(f"{where}: key 'output' expected a non-empty list of strings")
        instance_id = str(instance.get("id") or f"{name}_{r.index}_{position}")
        origin = task or instance_id.split("-", 1)[0]
        rows.append(_sft(instance_id, name, definitions[0], outputs[0], context=instance["input"], origin=origin))
    return rows


def mathinstruct(r: RawRow, name: str) -> list[dict]:
    return [_sft(r.row_id(name, "id"), name, r.text("instruction"), r.text("output"), origin=r.optional_text("source"))]


def openbookqa(r: RawRow, name: str) -> list[dict]:
    """The question and its lettered choices; the reply is the answer's letter (multiple-choice exact match,
    as HELM scores OpenBookQA). `fact1` (the `additional` config) is checked, not shown: it states the answer."""
    question = r.row.get("question")
    if isinstance(question, dict):  # AllenAI jsonl release (and ARC): question{stem, choices[{text, label}]}
        stem = question.get("stem")
        choices = question.get("choices")
        if not isinstance(stem, str):
            r.fail("field 'question.stem' expected a string")
        if (
            not isinstance(choices, list)
            or not choices
            or not all(
                isinstance(c, dict) and isinstance(c.get("text"), str) and isinstance(c.get("label"), str)
                for c in choices
            )
        ):
            r.fail("field 'question.choices' expected a non-empty list of {text, label} strings")
        pairs = [(c["label"], c["text"]) for c in choices]
    else:  # hub layout: question_stem, choices{text: [...], label: [...]}
        stem = r.text("question_stem")
        choices = r.parsed("choices", dict)
        texts = r.strings("choices.text", choices.get("text"))
        labels = r.strings("choices.label", choices.get("label"))
        if len(texts) != len(labels):
            r.fail(f"field 'choices' has {len(texts)} texts but {len(labels)} labels")
        pairs = list(zip(labels, texts))
    r.optional_text("fact1")
    answer = r.text("answerKey")
    if answer not in {label for label, _ in pairs}:
        r.fail(
            f"field 'answerKey' is {answer!r}, expected one of the choice labels "
            f"{', '.join(label for label, _ in pairs)}"
        )
    prompt = stem + "\n" + "\n".join(f"{label}. {text}" for label, text in pairs)
    return [_sft(r.row_id(name, "id"), name, prompt, answer)]


def quac(r: RawRow, name: str) -> list[dict]:
    """One row per question turn: the reply is the teacher's original answer (`orig_answers.texts`, which is
    CANNOTANSWER for unanswerable turns); the context holds the page, section and passage and the earlier
    turns of the dialogue, so every turn is answerable from its own row."""
    questions = r.strings("questions")
    answers = r.parsed("orig_answers", dict)
    texts = r.strings("orig_answers.texts", answers.get("texts"))
    if len(texts) != len(questions):
        r.fail(f"field 'orig_answers.texts' has {len(texts)} answers for {len(questions)} questions")
    turn_ids = r.row.get("turn_ids")
    if turn_ids is not None:
        turn_ids = r.strings("turn_ids", turn_ids)
        if len(turn_ids) != len(questions):
            r.fail(f"field 'turn_ids' has {len(turn_ids)} ids for {len(questions)} questions")
    dialogue = r.row_id(name, "dialogue_id")
    passage = r.text("context")
    header = [
        f"{label}: {value}"
        for label, value in (
            ("Title", r.optional_text("wikipedia_page_title")),
            ("Background", r.optional_text("background")),
            ("Section", r.optional_text("section_title")),
        )
        if value
    ]
    rows = []
    for turn, (question, answer) in enumerate(zip(questions, texts)):
        history = [f"Question: {q}\nAnswer: {a}" for q, a in zip(questions[:turn], texts[:turn])]
        context = "\n\n".join(["\n".join(header + [f"Passage: {passage}"]), *history])
        row_id = turn_ids[turn] if turn_ids else f"{dialogue}_q#{turn}"
        rows.append(_sft(row_id, name, question, answer, context=context))
    return rows


def cnn_dailymail(r: RawRow, name: str) -> list[dict]:
    return [
        _sft(r.row_id(name, "id"), name, CNN_DAILYMAIL_INSTRUCTION, r.text("highlights"), context=r.text("article"))
    ]


BIRBAL_HEADERS = ("### Instruction:\n", "### Input:\n", "### Response:\n")


def birbal_qa(r: RawRow, name: str) -> list[dict]:
    """Undo [BBc]'s pre-formatting: `question` is `[### Instruction:\\n{instruction}\\n\\n]### Input:\\n{input}
    \\n\\n### Response:\\n`; the birbal chat format renders the canonical row back to the same text."""
    question, answer = r.text("question"), r.text("answer")
    instruction_head, input_head, response_head = BIRBAL_HEADERS
    if not question.endswith(response_head):
        r.fail(f"field 'question' expected to end with {response_head!r}")
    body = question[: -len(response_head)]
    instruction = ""
    if body.startswith(instruction_head):
        instruction, sep, body = body[len(instruction_head) :].partition("\n\n" + input_head)
        if not sep:
            r.fail(f"field 'question' has an instruction block but no {input_head!r} block after it")
        body = input_head + body
    if not body.startswith(input_head) or not body.endswith("\n\n"):
        r.fail(f"field 'question' expected a {input_head!r} block ending with a blank line before the response")
    return [_sft(r.row_id(name, "id"), name, instruction, answer, context=body[len(input_head) : -2])]


# schema -> (kind, loader); kind is the canonical row type: sft, preference or eval
LOADERS: dict[str, tuple[str, Callable[[RawRow, str], list[dict]]]] = {
    "tulu_messages": ("sft", tulu_messages),
    "open_platypus": ("sft", open_platypus),
    "lima": ("sft", lima),
    "natural_instructions": ("sft", natural_instructions),
    "mathinstruct": ("sft", mathinstruct),
    "openbookqa": ("sft", openbookqa),
    "quac": ("sft", quac),
    "cnn_dailymail": ("sft", cnn_dailymail),
    "birbal_qa": ("sft", birbal_qa),
    "ultrafeedback": ("preference", ultrafeedback),
    "eval_exact": ("eval", eval_exact),
}
