"""Chat formats: rendered text, token-level loss masks, truncation, bos handling, chat-template round trips."""

from __future__ import annotations

import pytest

from menagerie.formats import (
    FORMATS,
    IGNORE_INDEX,
    chat_template_jinja,
    has_trained_tokens,
    render_prompt,
    render_segments,
    tokenize_sft,
)

EOS = "</s>"

TULU_ROW = {
    "id": "t-1",
    "source": "test",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello, what is the sum?"},
        {"role": "assistant", "content": "The sum is 42."},
        {"role": "user", "content": "Explain why."},
        {"role": "assistant", "content": "Because we compute it."},
    ],
}
SINGLE = {
    "id": "p-1",
    "source": "open_platypus",
    "messages": [
        {"role": "user", "content": "Write a python function."},
        {"role": "assistant", "content": "def f(): return 1"},
    ],
}
SINGLE_CTX = {**SINGLE, "id": "p-2", "context": "The input is a number."}

ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nWrite a python function.\n\n### Response:\ndef f(): return 1"
)
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nWrite a python function.\n\n### Input:\nThe input is a number.\n\n"
    "### Response:\ndef f(): return 1"
)
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def full_text(row, fmt, add_eos=True):
    return "".join(t for t, _ in render_segments(row, fmt, EOS, add_eos=add_eos))


def split_by_label(tok, example):
    """Decode the trained and the untrained tokens (each as one string, in order)."""
    ids, labels = example["input_ids"], example["labels"]
    trained = [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    untrained = [i for i, lab in zip(ids, labels) if lab == IGNORE_INDEX]
    return tok.decode(trained), tok.decode(untrained)


def token_positions(tok, ids, first=0):
    """{character start in the decoded text: token index} for ids[first:] (ASCII text: decoding is exact)."""
    return {len(tok.decode(ids[first:k])): k for k in range(first, len(ids))}


# --------------------------------------------------------------------------------------------- tulu


def test_formats_tuple():
    assert FORMATS == ("tulu", "alpaca", "birbal", "tokenizer")


def test_tulu_text():
    assert full_text(TULU_ROW, "tulu") == (
        "<|system|>\nYou are a helpful assistant.\n"
        "<|user|>\nHello, what is the sum?\n"
        "<|assistant|>\nThe sum is 42.</s>\n"
        "<|user|>\nExplain why.\n"
        "<|assistant|>\nBecause we compute it.</s>\n"
    )


def test_tulu_context_goes_to_first_user_turn():
    row = {**TULU_ROW, "context": "CTX"}
    assert "<|user|>\nHello, what is the sum?\n\nCTX\n<|assistant|>" in full_text(row, "tulu")
    assert full_text(row, "tulu").count("CTX") == 1
    assert render_prompt(TULU_ROW["messages"][:2], "tulu", EOS, context="CTX").endswith(
        "<|user|>\nHello, what is the sum?\n\nCTX\n<|assistant|>\n"
    )


def test_tulu_loss_mask_token_by_token(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = tokenize_sft(TULU_ROW, tok, "tulu", max_length=4096)
    ids, labels = ex["input_ids"], ex["labels"]
    assert len(ids) == len(labels)
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE_INDEX
    for i, lab in zip(ids, labels):
        assert lab in (i, IGNORE_INDEX)
    trained, untrained = split_by_label(tok, ex)
    assert trained == "The sum is 42.</s>Because we compute it.</s>"
    for header in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert header in untrained
    assert untrained.count("<|assistant|>") == 2
    assert "You are a helpful assistant." in untrained and "Explain why." in untrained
    # the decoded ids (after bos) reproduce the text exactly; find headers and replies by character offset
    text = full_text(TULU_ROW, "tulu")
    assert tok.decode(ids[1:]) == text
    pos_of = token_positions(tok, ids, first=1)
    for reply in ("The sum is 42.", "Because we compute it."):
        header_at = text.index("<|assistant|>\n" + reply)
        reply_at = header_at + len("<|assistant|>\n")
        assert labels[pos_of[header_at]] == IGNORE_INDEX
        assert labels[pos_of[reply_at]] == ids[pos_of[reply_at]]
        eos_pos = pos_of[reply_at + len(reply)]
        assert ids[eos_pos] == tok.eos_token_id and labels[eos_pos] == tok.eos_token_id
        assert labels[eos_pos + 1] == IGNORE_INDEX  # the "\n" after eos
        assert tok.decode([ids[eos_pos + 1]]) == "\n"
    assert sum(i == tok.eos_token_id for i in ids) == 2
    assert has_trained_tokens(ex)


def test_tulu_loss_on_all(tiny_tokenizer):
    ex = tokenize_sft(TULU_ROW, tiny_tokenizer, "tulu", max_length=4096, loss_on="all")
    assert ex["labels"][0] == IGNORE_INDEX  # the prepended bos stays masked
    assert ex["labels"][1:] == ex["input_ids"][1:]


def test_loss_on_rejects_unknown(tiny_tokenizer):
    with pytest.raises(ValueError, match="loss_on"):
        tokenize_sft(TULU_ROW, tiny_tokenizer, "tulu", max_length=64, loss_on="prompt")


# ------------------------------------------------------------------------------------ alpaca / birbal


def test_alpaca_text_without_input():
    assert full_text(SINGLE, "alpaca", add_eos=False) == ALPACA_NO_INPUT
    assert full_text(SINGLE, "alpaca", add_eos=True) == ALPACA_NO_INPUT + EOS


def test_alpaca_text_with_input():
    assert full_text(SINGLE_CTX, "alpaca", add_eos=False) == ALPACA_INPUT


def test_alpaca_mask(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = tokenize_sft(SINGLE_CTX, tok, "alpaca", max_length=4096, add_eos=False)
    assert tok.eos_token_id not in ex["input_ids"]
    trained, untrained = split_by_label(tok, ex)
    assert trained == "def f(): return 1"
    assert untrained == "<s>" + ALPACA_INPUT[: -len("def f(): return 1")]
    ex = tokenize_sft(SINGLE, tok, "alpaca", max_length=4096, add_eos=True)
    assert ex["input_ids"][-1] == tok.eos_token_id and ex["labels"][-1] == tok.eos_token_id
    assert split_by_label(tok, ex)[0] == "def f(): return 1</s>"


def test_alpaca_system_message_is_dropped():
    row = {**SINGLE, "messages": [{"role": "system", "content": "SYS"}] + SINGLE["messages"]}
    assert full_text(row, "alpaca", add_eos=False) == ALPACA_NO_INPUT


@pytest.mark.parametrize("fmt", ["alpaca", "birbal"])
def test_single_turn_formats_reject_multi_turn(fmt):
    with pytest.raises(ValueError, match=r"row 't-1' \(" + fmt + r" format\) is multi-turn"):
        render_segments(TULU_ROW, fmt, EOS)


def test_single_turn_formats_need_a_reply():
    row = {**SINGLE, "messages": SINGLE["messages"][:1]}
    with pytest.raises(ValueError, match="p-1"):
        render_segments(row, "alpaca", EOS)


def test_birbal_text_and_mask(tiny_tokenizer):
    # [BBc] combine_datasets.py: a row without an input is all input (LIMA, MathInstruct), no instruction block
    assert full_text(SINGLE, "birbal") == (
        "### Input:\nWrite a python function.\n\n### Response:\ndef f(): return 1</s>"
    )
    assert full_text(SINGLE_CTX, "birbal", add_eos=False) == (
        "### Instruction:\nWrite a python function.\n\n### Input:\nThe input is a number.\n\n"
        "### Response:\ndef f(): return 1"
    )
    ex = tokenize_sft(SINGLE_CTX, tiny_tokenizer, "birbal", max_length=4096)
    trained, untrained = split_by_label(tiny_tokenizer, ex)
    assert trained == "def f(): return 1</s>"
    assert "### Input:" in untrained and "### Response:" in untrained
    empty_instruction = {**SINGLE_CTX, "messages": [{"role": "user", "content": ""}, SINGLE["messages"][1]]}
    assert full_text(empty_instruction, "birbal", add_eos=False) == (
        "### Input:\nThe input is a number.\n\n### Response:\ndef f(): return 1"
    )


def bbc_question(instruction: str, given: str) -> str:
    """[BBc] data_prep/combine_datasets.py's pre-formatted prompt, written out independently of formats.py."""
    text = f"### Instruction:\n{instruction}\n\n" if len(instruction.strip()) > 0 else ""
    return text + f"### Input:\n{given}\n\n" + "### Response:\n"


@pytest.mark.parametrize("instruction,given", [("Summarize.", "A long article."), ("", "What is 2 + 2?")])
def test_birbal_prompt_is_bbc_preformatted_question(instruction, given):
    row = {
        "id": "b",
        "context": given if instruction else None,
        "messages": [{"role": "user", "content": instruction or given}, {"role": "assistant", "content": "4"}],
    }
    assert full_text(row, "birbal", add_eos=False) == bbc_question(instruction, given) + "4"


# ------------------------------------------------------------------------------- truncation, bos


def test_truncation_keeps_prefix_and_can_drop_all_trained(tiny_tokenizer):
    full = tokenize_sft(SINGLE, tiny_tokenizer, "alpaca", max_length=4096)
    n_prompt = full["labels"].index(next(lab for lab in full["labels"] if lab != IGNORE_INDEX))
    cut = tokenize_sft(SINGLE, tiny_tokenizer, "alpaca", max_length=n_prompt + 2)
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 2]
    assert cut["labels"] == full["labels"][: n_prompt + 2]
    assert has_trained_tokens(cut)
    gone = tokenize_sft(SINGLE, tiny_tokenizer, "alpaca", max_length=n_prompt)
    assert len(gone["input_ids"]) == n_prompt
    assert set(gone["labels"]) == {IGNORE_INDEX}
    assert not has_trained_tokens(gone)


def test_bos_only_when_tokenizer_adds_it(make_tiny_tokenizer):
    with_bos, no_bos = make_tiny_tokenizer(add_bos=True), make_tiny_tokenizer(add_bos=False)
    assert with_bos("a")["input_ids"][0] == with_bos.bos_token_id
    assert no_bos("a")["input_ids"][0] != no_bos.bos_token_id
    a = tokenize_sft(SINGLE, with_bos, "alpaca", max_length=4096)
    b = tokenize_sft(SINGLE, no_bos, "alpaca", max_length=4096)
    assert a["input_ids"] == [with_bos.bos_token_id] + b["input_ids"]
    assert a["labels"] == [IGNORE_INDEX] + b["labels"]
    assert no_bos.bos_token_id not in b["input_ids"]
    c = tokenize_sft(SINGLE, no_bos, "alpaca", max_length=4096, loss_on="all")
    assert c["labels"] == c["input_ids"]


# ------------------------------------------------------------------------------- prompts, templates


def test_render_prompt_texts():
    msgs = [{"role": "user", "content": "Hi"}]
    assert render_prompt(msgs, "tulu", EOS) == "<|user|>\nHi\n<|assistant|>\n"
    assert render_prompt(msgs, "birbal", EOS) == "### Input:\nHi\n\n### Response:\n"  # [BBc] inference wrapper
    assert render_prompt(msgs, "birbal", EOS, context="X") == "### Instruction:\nHi\n\n### Input:\nX\n\n### Response:\n"
    assert render_prompt(msgs, "alpaca", EOS, context="X") == ALPACA_INPUT.replace(
        "Write a python function.", "Hi"
    ).replace("The input is a number.", "X").removesuffix("def f(): return 1")
    # the prompt is the training text up to the reply
    assert full_text(SINGLE_CTX, "alpaca").startswith(
        render_prompt(SINGLE_CTX["messages"][:1], "alpaca", EOS, context=SINGLE_CTX["context"])
    )
    assert full_text(TULU_ROW, "tulu").startswith(render_prompt(TULU_ROW["messages"][:4], "tulu", EOS))


PROMPTS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Explain the answer's why."},
    ],
    [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}],
]


@pytest.mark.parametrize("fmt", ["tulu", "alpaca", "birbal"])
@pytest.mark.parametrize("messages", PROMPTS)
def test_chat_template_round_trip(make_tiny_tokenizer, fmt, messages):
    tok = make_tiny_tokenizer(chat_template=chat_template_jinja(fmt))
    got = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert got == render_prompt(messages, fmt, tok.eos_token)


def test_chat_template_survives_save_and_load(make_tiny_tokenizer, tmp_path):
    from transformers import PreTrainedTokenizerFast  # AutoTokenizer would import torch: same files, slower

    make_tiny_tokenizer(chat_template=chat_template_jinja("tulu")).save_pretrained(tmp_path)
    tok = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert tok.apply_chat_template(PROMPTS[2], add_generation_prompt=True, tokenize=False) == render_prompt(
        PROMPTS[2], "tulu", tok.eos_token
    )


@pytest.mark.parametrize("fmt", ["alpaca", "birbal"])
def test_single_turn_template_without_generation_prompt_renders_the_reply(make_tiny_tokenizer, fmt):
    tok = make_tiny_tokenizer(chat_template=chat_template_jinja(fmt))
    got = tok.apply_chat_template(SINGLE["messages"], tokenize=False)
    assert got == full_text(SINGLE, fmt, add_eos=False)


def test_chat_template_none_for_tokenizer_format():
    assert chat_template_jinja("tokenizer") is None
    with pytest.raises(ValueError, match="unknown chat format"):
        chat_template_jinja("chatml")


# ---------------------------------------------------------------------------------- tokenizer format


def test_tokenizer_format_masks_assistant_turns(make_tiny_tokenizer):
    tok = make_tiny_tokenizer(add_bos=False, chat_template=CHATML)
    with pytest.raises(ValueError, match="tokenize_sft"):
        render_segments(TULU_ROW, "tokenizer", EOS)
    ex = tokenize_sft(TULU_ROW, tok, "tokenizer", max_length=4096)
    text = tok.apply_chat_template(TULU_ROW["messages"], tokenize=False)
    assert tok.decode(ex["input_ids"]) == text
    trained, untrained = split_by_label(tok, ex)
    assert trained == "The sum is 42.<|im_end|>\nBecause we compute it.<|im_end|>\n"
    assert untrained.count("<|im_start|>assistant\n") == 2
    assert "Explain why." in untrained and "You are a helpful assistant." in untrained
    assert render_prompt(TULU_ROW["messages"][:2], "tokenizer", EOS, tokenizer=tok).endswith(
        "<|im_start|>user\nHello, what is the sum?<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="tokenizer="):
        render_prompt(TULU_ROW["messages"][:2], "tokenizer", EOS)


def test_tokenizer_format_context_and_bos(make_tiny_tokenizer):
    tok = make_tiny_tokenizer(add_bos=True, chat_template="{{ bos_token }}" + CHATML)
    ex = tokenize_sft(SINGLE_CTX, tok, "tokenizer", max_length=4096)
    assert ex["input_ids"].count(tok.bos_token_id) == 1  # the template's own bos is not doubled
    assert ex["input_ids"][0] == tok.bos_token_id and ex["labels"][0] == IGNORE_INDEX
    trained, untrained = split_by_label(tok, ex)
    assert trained == "def f(): return 1<|im_end|>\n"
    assert "Write a python function.\n\nThe input is a number.<|im_end|>" in untrained


def test_tokenizer_format_rejects_non_prefix_template(make_tiny_tokenizer):
    template = (
        "{% for m in messages %}{{ m['role'] + ':' + m['content'] }}"
        "{% if not loop.last %}{{ '|' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '>assistant:' }}{% endif %}"
    )
    tok = make_tiny_tokenizer(chat_template=template)
    with pytest.raises(ValueError, match="prefix by prefix"):
        tokenize_sft(SINGLE, tok, "tokenizer", max_length=64)
