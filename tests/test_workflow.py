"""Tests for menagerie.workflow.RecipePaths: the DAG (which artifact each stage reads and writes) on the shipped
config, without Snakemake. Fast and offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from menagerie.config import deep_merge, load_config, load_yaml, validate_config
from menagerie.workflow import RecipePaths, dataset_file, model_dir

from recipes import CONFIG_PATH, PUBLISHED_RECIPES, ROOT, TINY_TWINS  # noqa: E402

TINY_TWIN_NAMES = list(TINY_TWINS)


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(CONFIG_PATH)


@pytest.fixture(scope="module")
def paths(config) -> RecipePaths:
    return RecipePaths(config)


def final_eval(paths: RecipePaths, name: str, model_key: str) -> str:
    """The provenance of recipe `name`'s final evaluation: results/evals/<model key>/<its suite hash>/."""
    return f"results/evals/{model_key}/{paths.suite_hash(name)}/metrics.provenance.json"


def test_path_helpers():
    assert dataset_file("tiny-eval") == "resources/datasets/tiny-eval.jsonl"
    assert model_dir("smollm2-135m") == "resources/models/smollm2-135m"


# ------------------------------------------------------------------------------------------- tiny-tulu2-dpo


def test_tiny_tulu2_dpo_chain(paths):
    """The default twin fine-tunes fully, as Tulu 2 does: each stage's output directory is the model, no merges."""
    name = "tiny-tulu2-dpo"
    assert paths.training_stages(name) == ["sft", "dpo"]
    assert not paths.is_adapter(name, "sft") and not paths.is_adapter(name, "dpo")
    assert paths.base_model(name) == "resources/models/smollm2-135m"
    assert paths.stage_input(name, "sft") == "resources/models/smollm2-135m"
    # DPO starts from the SFT stage's own model directory
    assert paths.stage_input(name, "dpo") == "results/tiny-tulu2-dpo/sft"
    assert paths.stage_model(name, "sft") == "results/tiny-tulu2-dpo/sft"
    assert paths.final_model(name) == "results/tiny-tulu2-dpo/dpo"
    assert paths.adapter_source(name) is None and not paths.recipe(name)["stages"].get("merge")


def test_tiny_tulu2_dpo_stage_records(paths):
    records = paths.stage_records("tiny-tulu2-dpo")
    assert records == {
        "data.sft": "results/tiny-tulu2-dpo/data/sft_report.json",
        "sft": "results/tiny-tulu2-dpo/sft/provenance.json",
        "data.dpo": "results/tiny-tulu2-dpo/data/dpo_report.json",
        "dpo": "results/tiny-tulu2-dpo/dpo/provenance.json",
        "evaluate.final": final_eval(paths, "tiny-tulu2-dpo", "tiny-tulu2-dpo.dpo"),
    }


def test_tiny_tulu2_dpo_mixtures(paths):
    assert paths.mixture_datasets("tiny-tulu2-dpo", "sft") == {
        "tiny-sft": "resources/datasets/tiny-sft.jsonl",
        "tiny-units-sft": "resources/datasets/tiny-units-sft.jsonl",
    }
    assert paths.mixture_datasets("tiny-tulu2-dpo", "dpo") == {"tiny-prefs": "resources/datasets/tiny-prefs.jsonl"}


# ------------------------------------------------------------------------------------------- Tulu 2 (full)


def test_tulu2_dpo_7b_full_chain(paths):
    """[T2] §4: DPO on the Tulu 2 SFT model, i.e. tulu2-7b's output (tests/test_dpo_start.py has the rest)."""
    name = "tulu2-dpo-7b"
    assert paths.training_stages(name) == ["dpo"]
    assert not paths.is_adapter(name, "dpo")
    assert paths.stage_input(name, "dpo") == "results/tulu2-7b/sft"
    assert paths.final_model(name) == "results/tulu2-dpo-7b/dpo"
    assert paths.adapter_source(name) is None
    assert paths.upstream_recipes(name) == ["tulu2-dpo-7b", "tulu2-7b"]


def test_tulu2_dpo_7b_stage_records_have_no_merges(paths):
    """Its own DPO records and those of the SFT stage it starts from."""
    assert paths.stage_records("tulu2-dpo-7b") == {
        "data.dpo": "results/tulu2-dpo-7b/data/dpo_report.json",
        "dpo": "results/tulu2-dpo-7b/dpo/provenance.json",
        "evaluate.final": final_eval(paths, "tulu2-dpo-7b", "tulu2-dpo-7b.dpo"),
        "start.data.sft": "results/tulu2-7b/data/sft_report.json",
        "start.sft": "results/tulu2-7b/sft/provenance.json",
    }


def test_tulu2_7b_is_single_full_stage(paths):
    assert paths.training_stages("tulu2-7b") == ["sft"]
    assert paths.final_model("tulu2-7b") == "results/tulu2-7b/sft"
    assert paths.mixture_datasets("tulu2-7b", "sft") == {
        "tulu-v2-sft-mixture": "resources/datasets/tulu-v2-sft-mixture.jsonl"
    }


@pytest.mark.parametrize(
    "name,base",
    [
        ("tulu2-qlora-7b", "llama-2-7b"),
        ("tulu2-qlora-70b", "llama-2-70b"),
        ("platypus2-13b", "llama-2-13b"),
        ("birbal-7b", "mistral-7b"),
    ],
)
def test_adapter_recipes_merge_into_their_base(paths, name, base):
    assert paths.training_stages(name) == ["sft"]
    assert paths.is_adapter(name, "sft")
    assert paths.final_model(name) == f"results/{name}/sft_merged"
    assert paths.merge_inputs(name, "sft") == {"adapter": f"results/{name}/sft", "into": f"resources/models/{base}"}
    assert set(paths.stage_records(name)) == {"data.sft", "sft", "merge.sft", "evaluate.final"}


def test_merge_dtypes_follow_the_recipes(paths):
    assert paths.merge_dtype("tulu2-qlora-7b", "sft") == "bfloat16"
    assert paths.merge_dtype("platypus2-13b", "sft") == "float16"
    assert paths.merge_dtype("birbal-7b", "sft") == "bfloat16"


# ------------------------------------------------------------------------------------------- Platypus merges


@pytest.mark.parametrize(
    "name,target",
    [
        ("camel-platypus2-13b", "qcammel-13"),
        ("stable-platypus2-13b", "stablebeluga-13b"),
        ("openorca-platypus2-13b", "openorcaxopenchat-preview2-13b"),
    ],
)
def test_platypus_merge_recipes(paths, name, target):
    assert paths.training_stages(name) == []
    assert paths.adapter_source(name) == "platypus2-13b"
    # the adapter trained by platypus2-13b, folded into another fine-tune of Llama-2-13B
    assert paths.merge_inputs(name, "sft") == {
        "adapter": "results/platypus2-13b/sft",
        "into": f"resources/models/{target}",
    }
    assert paths.final_model(name) == f"results/{name}/sft_merged"
    assert paths.merge_dtype(name, "sft") == "float16"
    assert paths.stage_records(name) == {
        "merge.sft": f"results/{name}/sft_merged/provenance.json",
        "evaluate.final": final_eval(paths, name, f"{name}.sft_merged"),
    }


def test_camel_platypus2_13b(paths):
    assert paths.merge_inputs("camel-platypus2-13b", "sft") == {
        "adapter": "results/platypus2-13b/sft",
        "into": "resources/models/qcammel-13",
    }
    assert paths.final_model("camel-platypus2-13b") == "results/camel-platypus2-13b/sft_merged"


# ------------------------------------------------------------------------------------------- tiny twins


def test_tiny_platypus2_merges_into_the_base(paths):
    name = "tiny-platypus2"
    assert paths.training_stages(name) == ["sft"]
    assert paths.final_model(name) == "results/tiny-platypus2/sft_merged"
    assert paths.merge_inputs(name, "sft") == {
        "adapter": "results/tiny-platypus2/sft",
        "into": "resources/models/smollm2-135m",
    }
    assert paths.stage_records(name) == {
        "data.sft": "results/tiny-platypus2/data/sft_report.json",
        "sft": "results/tiny-platypus2/sft/provenance.json",
        "merge.sft": "results/tiny-platypus2/sft_merged/provenance.json",
        "evaluate.final": final_eval(paths, "tiny-platypus2", "tiny-platypus2.sft_merged"),
    }


def test_tiny_birbal(paths):
    assert paths.final_model("tiny-birbal") == "results/tiny-birbal/sft_merged"
    assert paths.merge_inputs("tiny-birbal", "sft") == {
        "adapter": "results/tiny-birbal/sft",
        "into": "resources/models/smollm2-135m",
    }


@pytest.mark.parametrize("name", TINY_TWIN_NAMES)
def test_tiny_twins_evaluate_on_tiny_eval(paths, name):
    assert paths.eval_datasets(name) == {"tiny-eval": "resources/datasets/tiny-eval.jsonl"}


@pytest.mark.parametrize("name", PUBLISHED_RECIPES)
def test_published_recipes_need_no_local_eval_data(paths, name):
    # their suites are lm-eval hub tasks and HumanEval from its package: no dataset file to materialise
    assert paths.eval_datasets(name) == {}


# ------------------------------------------------------------------------------------------- every recipe


@pytest.mark.parametrize("name", PUBLISHED_RECIPES + TINY_TWIN_NAMES)
def test_every_recipe_has_a_consistent_dag(paths, name):
    final = paths.final_model(name)
    assert final.startswith(f"results/{name}/")
    records = paths.stage_records(name)
    assert records["evaluate.final"] == final_eval(paths, name, f"{name}.{final.split('/')[-1]}")
    for stage in paths.training_stages(name):
        assert records[stage] == f"results/{name}/{stage}/provenance.json"
        assert records[f"data.{stage}"] == f"results/{name}/data/{stage}_report.json"
        source = paths.stage_input(name, stage)
        model = paths.recipe(name)["model"]
        upstream = model.removeprefix("recipe:") if model.startswith("recipe:") else None
        assert source.startswith(("resources/models/", f"results/{name}/", f"results/{upstream}/"))
    # every provenance file lives under the recipe's results, or (start.*) the recipe whose output it starts from,
    # but the final evaluation's (results/evals/, shared)
    assert all(
        p.startswith(f"results/{name}/") or (k.startswith("start.") and p.startswith(f"results/{upstream}/"))
        for k, p in records.items()
        if k != "evaluate.final"
    )
    # the final model is what the last stage produced (merged when the stage trained an adapter)
    stages = paths.training_stages(name)
    if stages and not paths.adapter_source(name):
        assert final == paths.stage_model(name, stages[-1])


def test_recipe_built_on_another_recipe(config):
    """`model: recipe:<other>` starts from the other recipe's final model."""
    raw = load_yaml(CONFIG_PATH)
    overlay = {
        "recipes": {
            "my-dpo": {
                "extends": "tiny-tulu2-dpo",
                "model": "recipe:tiny-platypus2",
                "stages": {"sft": None},
                "data": {"sft": None},
            }
        }
    }
    cfg = validate_config(deep_merge(raw, overlay))
    paths = RecipePaths(cfg)
    assert paths.training_stages("my-dpo") == ["dpo"]
    assert paths.base_model("my-dpo") == "results/tiny-platypus2/sft_merged"
    assert paths.stage_input("my-dpo", "dpo") == "results/tiny-platypus2/sft_merged"
    assert paths.final_model("my-dpo") == "results/my-dpo/dpo"  # full DPO, as tiny-tulu2-dpo's


def test_merge_into_another_recipes_final_model(paths):
    """`merge.into: recipe:<name>` folds the adapter into that recipe's final model (tiny Platypus-style merge)."""
    name = "tiny-platypus2-merged"
    assert paths.merge_inputs(name, "sft") == {
        "adapter": "results/tiny-platypus2/sft",
        "into": "results/tiny-tulu2-dpo/dpo",
    }
    assert paths.final_model(name) == "results/tiny-platypus2-merged/sft_merged"
    assert paths.merge_target("recipe:tiny-birbal") == "results/tiny-birbal/sft_merged"
    assert paths.merge_target("smollm2-135m") == "resources/models/smollm2-135m"
