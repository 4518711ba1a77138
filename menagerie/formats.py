"""Chat/prompt formats of the three papers: canonical rows -> text segments -> token ids + loss masks.

Formats (the recipe key `chat_format`):
  tulu       [T2] §2: `<|system|>\\n..\\n<|user|>\\n..\\n<|assistant|>\\n..{eos}\\n`;
             generation prompt `<|assistant|>\\n`.
  alpaca     [PL] templates/alpaca.json: the Alpaca preamble + `### Instruction` / `### Input` / `### Response`.
  birbal     [BB] §3, [BBc] data_prep/combine_datasets.py: `[### Instruction]` / `### Input` / `### Response`, no
             preamble; a row without a context is all input (empty instruction, no `### Instruction` block), as
             [BBc] lays out LIMA and MathInstruct rows and as its inference server wraps every prompt.
  tokenizer  the tokenizer's own chat template (loss spans found by rendering prefixes).

A row's optional `context` (an Open-Platypus `input`) belongs to the first user turn: it is the
`### Input` block for alpaca/birbal and is appended after a blank line to the first user content
otherwise. alpaca/birbal are single-turn: system messages are dropped, and a row with more than one
user turn is an error; prompts (render_prompt / chat_template_jinja) use the last user message.
`add_eos` applies to tulu (the eos after each reply), alpaca and birbal; a tokenizer's own template
decides its end-of-turn tokens.
"""

from __future__ import annotations

from typing import Any

FORMATS: tuple[str, ...] = ("tulu", "alpaca", "birbal", "tokenizer")
IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)
ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
)
TULU_HEADERS = {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"}


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown chat format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _check_messages(messages: list[dict], where: str) -> None:
    if not messages:
        raise ValueError(f"{where} has no messages")
    for m in messages:
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where} has a malformed message {m!r}; roles are {', '.join(ROLES)}, content a string")


def _with_context(messages: list[dict], context: str | None) -> list[dict]:
    """Append `context` to the first user message after a blank line (tulu and tokenizer formats)."""
    if not context:
        return list(messages)
    out, done = [], False
    for m in messages:
        if m["role"] == "user" and not done:
            m, done = {**m, "content": f"{m['content']}\n\n{context}"}, True
        out.append(m)
    return out


def birbal_fields(instruction: str, context: str | None) -> tuple[str, str]:
    """(instruction, input) of a single-turn row in Birbal's layout ([BBc] combine_datasets.py): with a context,
    the user message is the instruction and the context the input; without one, the instruction is empty and the
    user message is the input ([BBc] puts LIMA and MathInstruct prompts in `input`)."""
    return (instruction, context) if context else ("", instruction)


def _single_turn_prompt(fmt: str, instruction: str, context: str | None) -> str:
    if fmt == "birbal":  # [BBc]: the instruction block only when non-empty; the input block always
        instruction, given = birbal_fields(instruction, context)
        head = f"### Instruction:\n{instruction}\n\n" if instruction.strip() else ""
        return f"{head}### Input:\n{given}\n\n### Response:\n"
    head = ALPACA_PREAMBLE_INPUT if context else ALPACA_PREAMBLE
    body = f"### Instruction:\n{instruction}\n\n"
    if context:
        body += f"### Input:\n{context}\n\n"
    return head + body + "### Response:\n"


def render_segments(row: dict, fmt: str, eos_token: str, add_eos: bool = True) -> list[tuple[str, bool]]:
    """The row's training text as ordered (text, trained) segments; trained = contributes to the loss."""
    _check_fmt(fmt)
    where = f"row {row.get('id')!r} ({fmt} format)"
    if fmt == "tokenizer":
        raise ValueError("the tokenizer format has no fixed segments; use tokenize_sft with a tokenizer")
    messages = row.get("messages") or []
    _check_messages(messages, where)
    eos = eos_token if add_eos else ""
    if fmt == "tulu":
        segments: list[tuple[str, bool]] = []
        for m in _with_context(messages, row.get("context")):
            if m["role"] == "assistant":
                segments += [(TULU_HEADERS["assistant"], False), (m["content"] + eos, True), ("\n", False)]
            else:
                segments.append((f"{TULU_HEADERS[m['role']]}{m['content']}\n", False))
        return segments
    turns = [m for m in messages if m["role"] != "system"]
    n_user = sum(m["role"] == "user" for m in turns)
    if n_user > 1:
        raise ValueError(f"{where} is multi-turn ({n_user} user turns); the {fmt} format is single-turn")
    if [m["role"] for m in turns] != ["user", "assistant"]:
        raise ValueError(f"{where} must be one user turn followed by one assistant turn")
    prompt = _single_turn_prompt(fmt, turns[0]["content"], row.get("context"))
    return [(prompt, False), (turns[1]["content"] + eos, True)]


def render_prompt(
    messages: list[dict], fmt: str, eos_token: str, context: str | None = None, tokenizer: Any = None
) -> str:
    """The text up to and including the generation prompt (for generation, evaluation and DPO prompts)."""
    _check_fmt(fmt)
    _check_messages(messages, f"prompt ({fmt} format)")
    if fmt == "tulu":
        text = ""
        for m in _with_context(messages, context):
            if m["role"] == "assistant":
                text += f"{TULU_HEADERS['assistant']}{m['content']}{eos_token}\n"
            else:
                text += f"{TULU_HEADERS[m['role']]}{m['content']}\n"
        return text + TULU_HEADERS["assistant"]
    if fmt == "tokenizer":
        if tokenizer is None:
            raise ValueError("render_prompt with the tokenizer format needs tokenizer=")
        return tokenizer.apply_chat_template(
            _with_context(messages, context), add_generation_prompt=True, tokenize=False
        )
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise ValueError(f"prompt ({fmt} format) has no user message")
    return _single_turn_prompt(fmt, users[-1], context)


def _template_spans(row: dict, tokenizer: Any) -> tuple[str, list[tuple[int, int, bool]]]:
    """Full text and trained character spans for the tokenizer's own chat template, by rendering prefixes."""
    where = f"row {row.get('id')!r} (tokenizer format)"
    messages = row.get("messages") or []
    _check_messages(messages, where)
    messages = _with_context(messages, row.get("context"))

    def render(msgs: list[dict], gen: bool) -> str:
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=False)

    full = render(messages, False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, through = render(messages[:k], True) if k else "", render(messages[: k + 1], False)
        if not (full.startswith(before) and full.startswith(through) and len(before) <= len(through)):
            raise ValueError(f"{where}: the tokenizer's chat template does not render conversations prefix by prefix")
        spans.append((len(before), len(through), True))
    return full, spans


def _trained_spans(segments: list[tuple[str, bool]]) -> list[tuple[int, int, bool]]:
    spans, pos = [], 0
    for text, trained in segments:
        if trained:
            spans.append((pos, pos + len(text), True))
        pos += len(text)
    return spans


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def tokenize_sft(
    row: dict, tokenizer: Any, fmt: str, max_length: int, loss_on: str = "assistant", add_eos: bool = True
) -> dict:
    """{"input_ids", "labels"}: the row tokenized once; labels are -100 on every untrained token.

    A token is trained iff its start offset lies in a trained span; the prepended bos is always
    masked. Right-truncated to max_length (labels may then be all -100: see has_trained_tokens)."""
    _check_fmt(fmt)
    if loss_on not in ("assistant", "all"):
        raise ValueError(f"loss_on must be 'assistant' or 'all', got {loss_on!r}")
    if fmt == "tokenizer":
        text, spans = _template_spans(row, tokenizer)  # the template decides end-of-turn tokens: add_eos unused
    else:
        segments = render_segments(row, fmt, tokenizer.eos_token, add_eos=add_eos)
        text, spans = "".join(t for t, _ in segments), _trained_spans(segments)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    if loss_on == "all":
        trained = [True] * len(ids)
    else:
        trained = [any(a <= s < b for a, b, _ in spans) for s, _ in offsets]
    if _adds_bos(tokenizer) and (not ids or ids[0] != tokenizer.bos_token_id):
        ids, trained = [tokenizer.bos_token_id] + ids, [False] + trained
    ids, trained = ids[:max_length], trained[:max_length]
    labels = [i if t else IGNORE_INDEX for i, t in zip(ids, trained)]
    return {"input_ids": ids, "labels": labels}


def has_trained_tokens(example: dict) -> bool:
    """Whether any label survives (truncation can mask a whole row)."""
    return any(label != IGNORE_INDEX for label in example["labels"])


_TULU_JINJA = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)

_SINGLE_TURN_JINJA = (
    "{%- set ns = namespace(user='', reply=none) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{%- set ns.user = message['content'] -%}{%- set ns.reply = none -%}"
    "{%- elif message['role'] == 'assistant' -%}{%- set ns.reply = message['content'] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{ PREAMBLE + HEADER + ns.user + '\\n\\n' }}"
    "{%- if add_generation_prompt -%}{{ '### Response:\\n' }}"
    "{%- elif ns.reply is not none -%}{{ '### Response:\\n' + ns.reply }}"
    "{%- endif -%}"
)


def chat_template_jinja(fmt: str) -> str | None:
    """A Jinja chat template implementing `fmt` (saved into trained tokenizers); None for `tokenizer`.

    apply_chat_template(messages, add_generation_prompt=True, tokenize=False) equals
    render_prompt(messages, fmt, tokenizer.eos_token). alpaca/birbal render the last user message (chat messages
    carry no context): alpaca as its `### Instruction`, birbal as its `### Input` (see birbal_fields)."""
    _check_fmt(fmt)
    if fmt == "tulu":
        return _TULU_JINJA
    if fmt == "tokenizer":
        return None
    preamble, header = (ALPACA_PREAMBLE, "### Instruction:\n") if fmt == "alpaca" else ("", "### Input:\n")
    return _SINGLE_TURN_JINJA.replace("PREAMBLE", repr(preamble)).replace("HEADER", repr(header))


def load_tokenizer(model_dir, chat_format: str | None = None):
    """A model's HF tokenizer as every stage uses it: pad token = eos where it has none, and the recipe's chat
    template installed when `chat_format` names one (evaluation and judges render prompts with it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    template = chat_template_jinja(chat_format) if chat_format else None
    if template:
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
