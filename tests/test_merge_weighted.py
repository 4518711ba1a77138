"""Weighted merges of several LoRA adapters (peft add_weighted_adapter: linear, TIES, DARE) and merges into another
recipe's final model (`merge.into: recipe:<name>`). Numerical checks on a tiny random Llama; DAG checks on config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from menagerie.config import deep_merge, load_config, load_yaml, validate_config  # noqa: E402
from menagerie.errors import ConfigError  # noqa: E402
from menagerie.merge import merge_adapter, weighted_adapter_model  # noqa: E402
from menagerie.workflow import RecipePaths  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_tiny_tokenizer) -> dict:
    """A tiny random Llama and two random (non-zero) LoRA adapters of different targets and ranks on it."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("weighted")
    tokenizer = make_tiny_tokenizer(add_bos=True)
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=len(tokenizer),
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(root / "base"))
    tokenizer.save_pretrained(str(root / "base"))
    adapters = []
    for i, targets in enumerate((["q_proj", "v_proj", "gate_proj"], ["q_proj", "up_proj"])):
        torch.manual_seed(10 + i)
        model = get_peft_model(
            LlamaForCausalLM.from_pretrained(str(root / "base")),
            LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM"),
        )
        model.save_pretrained(str(root / f"adapter{i}"))
        tokenizer.save_pretrained(str(root / f"adapter{i}"))
        adapters.append(root / f"adapter{i}")
    return {"root": root, "base": root / "base", "adapters": adapters}


def logits(model, seed: int = 0):
    torch.manual_seed(seed)
    ids = torch.randint(5, 400, (2, 12))
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "density"), [("linear", None), ("ties", 0.5), ("dare_linear", 0.7), ("dare_ties", 0.7)]
)
def test_weighted_merge_equals_the_weighted_adapter_active(tiny, tmp_path, method, density):
    from transformers import AutoModelForCausalLM

    combine = {
        "method": method,
        "density": density,
        "majority_sign_method": "total",
        "adapters": [(str(tiny["adapters"][0]), 0.7), (str(tiny["adapters"][1]), 0.4)],
    }
    torch.manual_seed(123)  # DARE prunes at random: the same seed for both sides
    record = merge_adapter(tiny["adapters"][0], tiny["base"], tmp_path / "out", "float32", "weighted", None, combine)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.manual_seed(123)
    reference = weighted_adapter_model(AutoModelForCausalLM.from_pretrained(str(tiny["base"])), combine)
    assert reference.active_adapter == "weighted"
    torch.testing.assert_close(logits(merged), logits(reference), rtol=1e-4, atol=1e-4)
    # the combination really differs from either adapter alone and from the base
    base = AutoModelForCausalLM.from_pretrained(str(tiny["base"]))
    assert not torch.allclose(logits(merged), logits(base), atol=1e-4)
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["combination"]["method"] == method
    assert [a["weight"] for a in provenance["combination"]["adapters"]] == [0.7, 0.4]
    assert set(record["input_sha256"]) == {"adapter", "adapter_1"}


@pytest.mark.slow
def test_linear_merge_of_one_adapter_with_weight_one_is_the_plain_merge(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    adapter = tiny["adapters"][0]
    merge_adapter(adapter, tiny["base"], tmp_path / "plain", "float32", "plain")
    merge_adapter(
        adapter,
        tiny["base"],
        tmp_path / "linear",
        "float32",
        "linear",
        None,
        {"method": "linear", "density": None, "adapters": [(str(adapter), 1.0)]},
    )
    plain, linear = (AutoModelForCausalLM.from_pretrained(str(tmp_path / d)) for d in ("plain", "linear"))
    torch.testing.assert_close(logits(linear), logits(plain), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- recipes / DAG


def _config(overlay: dict) -> dict:
    return validate_config(deep_merge(load_yaml(REPO / "config.yaml"), overlay))


def test_tiny_platypus2_merged_folds_the_adapter_into_another_tiny_fine_tune():
    paths = RecipePaths(load_config(REPO / "config.yaml"))
    name = "tiny-platypus2-merged"
    assert paths.training_stages(name) == []
    assert paths.merge_inputs(name, "sft") == {
        "adapter": "results/tiny-platypus2/sft",
        "into": "results/tiny-tulu2-dpo/dpo",
    }  # a full fine-tune
    assert paths.final_model(name) == "results/tiny-platypus2-merged/sft_merged"
    assert paths.merge_combination(name, "sft") is None
    assert paths.merge_dtype(name, "sft") == "float32"


def test_combine_option_lists_every_adapter_with_its_weight():
    # a DPO adapter to combine: tiny-tulu2-dpo with its (full) DPO stage switched to LoRA
    lora = {"method": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}}
    cfg = _config(
        {
            "recipes": {
                "tiny-dpo-lora": {"extends": "tiny-tulu2-dpo", "stages": {"dpo": lora}},
                "tiny-platypus2": {
                    "stages": {
                        "merge": {
                            "combine": {
                                "method": "ties",
                                "density": 0.5,
                                "weight": 0.6,
                                "adapters": [
                                    {"recipe": "tiny-birbal", "weight": 0.4},
                                    {"recipe": "tiny-dpo-lora", "stage": "dpo", "weight": 0.2},
                                ],
                            }
                        }
                    }
                },
            }
        }
    )
    paths = RecipePaths(cfg)
    inputs = paths.merge_inputs("tiny-platypus2", "sft")
    assert inputs == {
        "adapter": "results/tiny-platypus2/sft",
        "into": "resources/models/smollm2-135m",
        "combine_with": ["results/tiny-birbal/sft", "results/tiny-dpo-lora/dpo"],
    }
    assert paths.merge_combination("tiny-platypus2", "sft") == {
        "method": "ties",
        "density": 0.5,
        "majority_sign_method": "total",
        "adapters": [
            ("results/tiny-platypus2/sft", 0.6),
            ("results/tiny-birbal/sft", 0.4),
            ("results/tiny-dpo-lora/dpo", 0.2),
        ],
    }


@pytest.mark.parametrize(
    ("merge", "message"),
    [
        ({"into": "recipe:nope"}, "key 'stages.merge.into' names unknown recipe 'nope'"),
        (
            {"combine": {"method": "ties", "adapters": [{"recipe": "tiny-birbal", "weight": 1}]}},
            "key 'stages.merge.combine.density' is required for method ties",
        ),
        (
            {"combine": {"method": "linear", "adapters": [{"recipe": "tulu2-7b", "weight": 1}]}},
            "key 'stages.merge.combine.adapters.0' names no LoRA/QLoRA stage 'sft' of recipe 'tulu2-7b'",
        ),
        (
            {"combine": {"method": "linear", "adapters": [{"recipe": "tiny-tulu2-dpo", "stage": "dpo", "weight": 1}]}},
            "key 'stages.merge.combine.adapters.0' names no LoRA/QLoRA stage 'dpo' of recipe 'tiny-tulu2-dpo'",
        ),
        ({"combine": {"method": "mean", "adapters": [{"recipe": "tiny-birbal", "weight": 1}]}}, "combine"),
    ],
)
def test_bad_merge_options_name_the_key(merge, message):
    with pytest.raises(ConfigError) as info:
        _config({"recipes": {"tiny-platypus2": {"stages": {"merge": merge}}}})
    assert message in str(info.value)
