"""The published mixtures as recipe data (config.yaml): per-source counts with their sources, origin selections,
Birbal's filters, and pinned hub revisions."""

from __future__ import annotations

import copy
import re

import pytest

from menagerie.config import validate_config
from menagerie.data.loaders import LOADERS
from menagerie.errors import ConfigError

UNPINNED = {"quac"}  # no public pin found (README "Data"): the dataset stage asks for one
MATHINSTRUCT_KEEP = ["data/CoT/gsm_train.json", "data/CoT/aqua_rat.json", "data/CoT/MATH_train.json"]


def sources(config: dict, recipe: str) -> list[dict]:
    return config["recipes"][recipe]["data"]["sft"]["sources"]


def by_dataset(config: dict, recipe: str) -> dict[str, dict]:
    return {item["dataset"]: item for item in sources(config, recipe)}


def test_every_hub_dataset_pins_a_revision_or_says_it_has_none(raw: dict) -> None:
    hub = {name: entry for name, entry in raw["datasets"].items() if entry["source"] == "hub"}
    assert hub and all("revision" in entry for entry in hub.values()), "every hub dataset names its revision"
    assert {name for name, entry in hub.items() if entry["revision"] is None} == UNPINNED
    for name, entry in hub.items():
        if name not in UNPINNED:
            assert re.fullmatch(r"[0-9a-f]{40}", entry["revision"]), (name, entry["revision"])


def test_a_hub_dataset_without_revision_is_a_config_error(raw: dict) -> None:
    cfg = copy.deepcopy(raw)
    del cfg["datasets"]["lima"]["revision"]
    with pytest.raises(
        ConfigError,
        match=r"dataset 'lima': key '\(the entry itself\)': missing required key "
        r"'revision'",
    ):
        validate_config(cfg)


def test_every_dataset_schema_has_a_loader(config: dict) -> None:
    assert {entry["schema"] for entry in config["datasets"].values()} <= set(LOADERS)


def test_tulu_v2_mix_per_source_counts(config: dict) -> None:
    items = sources(config, "tulu2-7b")
    assert {item["dataset"] for item in items} == {"tulu-v2-sft-mixture"}
    counts = {item["origins"][0]: item["paper_count"] for item in items}
    assert counts == {
        "flan_v2": 50000,
        "cot": 50000,
        "oasst1": 7708,
        "sharegpt": 114046,
        "gpt4_alpaca": 20000,
        "code_alpaca": 20022,
        "lima": 1030,
        "wizardlm": 30000,
        "open_orca": 30000,
        "science.*": 7544,
        "hard_coded": 140,
    }
    assert sum(counts.values()) == 330490  # the paper's counts; the release holds 326,154 rows
    assert all("count" not in item for item in items), "the released mix is taken whole, per source"
    for recipe in ("tulu2-70b", "tulu2-qlora-7b", "codetulu2-34b"):
        assert sources(config, recipe) == items, recipe
    # the DPO recipes train no SFT of their own: they start from tulu2-<size>'s output (tests/test_dpo_start.py)
    assert "sft" not in config["recipes"]["tulu2-dpo-13b"]["data"]


def test_open_platypus_ten_sources(config: dict) -> None:
    counts = {item["origins"][0]: item["paper_count"] for item in sources(config, "platypus2-13b")}
    assert len(counts) == 10 and sum(counts.values()) == 24926
    assert counts["MATH/PRM-800K"] == 12298 and counts["airoboros"] == 2605 and counts["guanaco"] == 797
    assert config["recipes"]["platypus2-13b"]["data"]["sft"]["curation"] == {
        "exact_dedup": True,
        "near_dup_cosine": 0.8,
    }


@pytest.mark.parametrize(
    "recipe,ni,cnn,math",
    [
        ("birbal-7b", 50000, 15000, 50000),
        ("birbal-7b-400k", 110000, 28000, 100000),
        ("birbal-7b-700k", 220000, 28000, 200000),
    ],
)
def test_birbal_mixes_per_source(config: dict, recipe: str, ni: int, cnn: int, math: int) -> None:
    items = by_dataset(config, recipe)
    suffix = recipe.removeprefix("birbal-7b")  # NI rows are drawn per mix size (ni-<kind>-400k / -700k)
    assert list(items) == [
        "lima",
        "open-platypus",
        f"ni-exact-match{suffix}",
        f"ni-generation{suffix}",
        "openbookqa",
        "quac",
        "cnn-dailymail",
        "mathinstruct",
    ]
    assert items[f"ni-exact-match{suffix}"]["count"] == items[f"ni-generation{suffix}"]["count"] == ni
    assert config["datasets"][f"ni-exact-match{suffix}"]["ni"]["count"] == ni  # each draw is sized to its mix
    assert items["cnn-dailymail"]["count"] == cnn and items["mathinstruct"]["count"] == math
    assert items["quac"]["count"] == 10000
    assert items["lima"]["paper_count"] == 1000 and items["openbookqa"]["paper_count"] == 5000
    # LLM-generated rows excluded: Open-Platypus's GPT-4 source, MathInstruct beyond [BBc]'s human-written CoT
    assert items["open-platypus"]["exclude_origins"] == ["airoboros"]
    assert items["mathinstruct"]["origins"] == MATHINSTRUCT_KEEP
    data = config["recipes"][recipe]["data"]["sft"]
    assert data["filters"] == {"single_turn": True, "max_prompt_words": 800, "min_input_words": 5, "dedup_input": True}
    assert data["validation"] == 2000


def test_tiny_birbal_mixes_several_generated_schemas_through_the_same_filters(config: dict) -> None:
    items = sources(config, "tiny-birbal")
    schemas = {config["datasets"][item["dataset"]]["schema"] for item in items}
    assert {"lima", "open_platypus", "mathinstruct"} <= schemas
    assert any(item.get("origins") or item.get("exclude_origins") for item in items)
    assert (
        config["recipes"]["tiny-birbal"]["data"]["sft"]["filters"]
        == config["recipes"]["birbal-7b"]["data"]["sft"]["filters"]
    )


def test_datasets_read_follow_upstream_recipes(config: dict) -> None:
    """What the dry run's unpinned-revision notes are computed from."""
    from menagerie.workflow import RecipePaths

    paths = RecipePaths(config)
    assert paths.upstream_recipes("camel-platypus2-13b") == ["camel-platypus2-13b", "platypus2-13b"]
    assert paths.datasets_read("camel-platypus2-13b") == ["open-platypus"]
    assert paths.upstream_recipes("tiny-platypus2-merged") == [
        "tiny-platypus2-merged",
        "tiny-tulu2-dpo",
        "tiny-platypus2",
    ]
    assert paths.datasets_read("tiny-platypus2-merged") == [
        "tiny-sft",
        "tiny-units-sft",
        "tiny-prefs",
        "tiny-platypus",
        "tiny-eval",
    ]
    assert {"quac", "cnn-dailymail"} <= set(paths.datasets_read("birbal-7b"))
