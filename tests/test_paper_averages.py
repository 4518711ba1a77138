"""The papers' averages (config `averages:`, menagerie/report.py): recomputed from the papers' own per-task numbers
they give the papers' published averages, with the paper's tasks, shots and inversions; Δpaper is taken only on
that average and only when every one of its tasks ran. Hand-made metrics; fast and offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from menagerie.config import ConfigError, load_config, validate_config
from menagerie.report import build_eval_entry

ROOT = Path(__file__).resolve().parents[1]

# recipes.md "Published results" (copied from the papers' tables): the per-task numbers and the average
TULU2_7B = {
    "mmlu_0shot": 50.4,
    "gsm8k_cot_8shot": 34.0,
    "bbh_cot_3shot": 48.5,
    "tydiqa_goldp_1shot": 46.4,
    "codex_humaneval_pass10": 36.9,
    "alpaca_eval": 73.9,
    "toxigen": 7.0,
}  # [T2] Table 1, Avg 54.7
PLATYPUS2_13B = {
    "arc_challenge_25shot": 61.26,
    "hellaswag_10shot": 82.56,
    "mmlu_5shot": 56.70,
    "truthfulqa_mc2_0shot": 44.86,
}  # [PL] Table 3, 61.35


# rows whose per-task numbers (as recipes.md gives them) do not give their own published average: Tulu 2+DPO 7B's
# 50.7/34.5/45.5/44.5/40.0/85.1/(100-0.5) average 57.11, its Avg (7) says 56.3 (to check against the paper's PDF;
# test_no_other_averaging_rule_explains_the_dpo_7b_row: no other choice of tasks or ToxiGen handling does either)
INCONSISTENT_ROWS = {"tulu2-dpo-7b": (50.7 + 34.5 + 45.5 + 44.5 + 40.0 + 85.1 + 99.5) / 7}


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(ROOT / "config.yaml")


def run(config: dict, recipe: str, values: dict, skipped: tuple[str, ...] = (), base: dict | None = None) -> dict:
    suites = [t for s in config["recipes"][recipe]["eval"]["suites"] for t in config["suites"][s]]
    tasks = {}
    for t in suites:
        if t["name"] in values and t["name"] not in skipped:
            tasks[t["name"]] = {
                "status": "ok",
                "metric": t["metric"],
                "value": values[t["name"]],
                "stderr": 0.5,
                "n": 100,
                "num_fewshot": t.get("num_fewshot"),
            }
        else:
            tasks[t["name"]] = {"status": "skipped", "reason": f"{t['name']} could not run here"}
    final = {
        "backend": "vllm",
        "dtype": "bfloat16",
        "batch_size": 8,
        "chat_format": "tulu",
        "seed": 1,
        "chat_template_sha256": "0" * 64,
        "tasks": tasks,
    }
    base_metrics = None
    if base is not None:
        base_metrics = {**final, "tasks": {k: {**v, "value": base[k]} if k in base else v for k, v in tasks.items()}}
    return build_eval_entry(config, recipe, final, base_metrics, {}, "final")


def test_tulu2_7b_avg7_from_the_papers_numbers(config):
    entry = run(config, "tulu2-7b", TULU2_7B)
    avg = entry["average_as_published"]
    by_hand = (50.4 + 34.0 + 48.5 + 46.4 + 36.9 + 73.9 + (100 - 7.0)) / 7  # 54.73
    assert avg["name"] == "tulu2-avg7" and avg["value"] == pytest.approx(by_hand)
    assert round(avg["value"], 1) == 54.7 == avg["published"]
    assert entry["published"]["average_delta"] == pytest.approx(by_hand - 54.7)
    toxigen = next(p for p in avg["tasks"] if p["task"] == "toxigen")
    assert (toxigen["value"], toxigen["counted"], toxigen["invert"]) == (7.0, pytest.approx(93.0), 100)
    # our all-task average mixes what the paper did not (raw % toxic; 5-shot MMLU, pass@1 and TruthfulQA skipped)
    assert entry["average"] == pytest.approx(sum(TULU2_7B.values()) / 7)
    assert entry["average"] != pytest.approx(avg["value"])


def test_platypus2_13b_4task_average_from_the_papers_numbers(config):
    # winogrande and gsm8k (added to v1 later) also ran: in our all-task average, not in the paper's
    entry = run(config, "platypus2-13b", {**PLATYPUS2_13B, "winogrande_5shot": 75.0, "gsm8k_5shot": 10.0})
    avg = entry["average_as_published"]
    assert avg["name"] == "openllm-v1-avg4"
    assert avg["value"] == pytest.approx((61.26 + 82.56 + 56.70 + 44.86) / 4)
    assert avg["published"] == 61.35 and abs(avg["value"] - 61.35) <= 0.005 + 1e-9  # 61.345, rounded half up
    assert entry["average"] == pytest.approx((61.26 + 82.56 + 56.70 + 44.86 + 75.0 + 10.0) / 6)
    assert entry["published"]["average_delta"] == pytest.approx(avg["value"] - 61.35)


def test_every_published_average_is_recomputed_from_its_own_rows(config):
    """Every recipe whose paper row gives all the per-task numbers of its average: the recomputation rounds to the
    published average (Tulu 2 Avg (7) and 8-task rows, the Platypus2 rows)."""
    checked = []
    for name, recipe in config["recipes"].items():
        entry_avg = None
        metrics = (recipe.get("published") or {}).get("metrics") or {}
        for avg_name, average in config["averages"].items():
            if average["suite"] in recipe["eval"]["suites"] and average["published_key"] in metrics:
                entry_avg = average
                break
        if entry_avg is None:
            continue
        keys = {t["name"]: t.get("published_key") for t in config["suites"][entry_avg["suite"]]}
        values = {task: metrics[keys[task]] for task in keys if keys[task] in metrics}
        if any(p["task"] not in values for p in entry_avg["tasks"]):
            continue  # the paper gives no per-task number for some task
        avg = run(config, name, values)["average_as_published"]
        if name in INCONSISTENT_ROWS:
            assert avg["value"] == pytest.approx(INCONSISTENT_ROWS[name]), name
        else:
            assert abs(avg["value"] - avg["published"]) <= 0.051, (name, avg["value"], avg["published"])
        checked.append(name)
    assert {
        "tulu2-7b",
        "tulu2-13b",
        "tulu2-70b",
        "tulu2-dpo-7b",
        "tulu2-dpo-13b",
        "tulu2-dpo-70b",
        "tulu2-qlora-7b",
        "tulu2-qlora-13b",
        "tulu2-qlora-70b",
        "platypus2-13b",
        "stable-platypus2-13b",
        "openorca-platypus2-13b",
    } <= set(checked)


# [T2] Table 1 rows as recipes.md gives them: MMLU, GSM8k, BBH, TydiQA, Codex P@10, AlpacaEval, ToxiGen, Avg (7)
TULU2_ROWS = {
    "tulu2-7b": (50.4, 34.0, 48.5, 46.4, 36.9, 73.9, 7.0, 54.7),
    "tulu2-dpo-7b": (50.7, 34.5, 45.5, 44.5, 40.0, 85.1, 0.5, 56.3),
    "tulu2-13b": (55.4, 46.0, 49.5, 53.2, 49.0, 78.9, 1.7, 61.5),
    "tulu2-dpo-13b": (55.3, 49.5, 49.4, 39.7, 48.9, 89.5, 1.1, 61.6),
    "tulu2-70b": (67.3, 73.0, 68.4, 53.6, 68.5, 86.6, 0.5, 73.8),
    "tulu2-dpo-70b": (67.8, 71.5, 66.0, 35.8, 68.9, 95.1, 0.2, 72.1),
}
AVERAGING_RULES = {  # which of the sheet's numbers enter the average, and how ToxiGen enters
    "7 tasks, 100 - ToxiGen": lambda r: (sum(r[:6]) + 100 - r[6]) / 7,
    "7 tasks, raw ToxiGen": lambda r: sum(r[:7]) / 7,
    "6 tasks, no ToxiGen": lambda r: sum(r[:6]) / 6,
    "6 tasks, no AlpacaEval": lambda r: (sum(r[:5]) + 100 - r[6]) / 6,
    "5 tasks, neither judged task": lambda r: sum(r[:5]) / 5,
}


def test_no_other_averaging_rule_explains_the_dpo_7b_row():
    """The paper's rule (7 tasks, 100 - ToxiGen) gives the published Avg of the five other Tulu 2 / +DPO rows; for
    Tulu 2+DPO 7B neither it nor leaving out or not inverting the judged tasks gives 56.3. Its gap is the per-task
    sum being 5.7 points higher than 7 x 56.3: one number of the row differing from the paper's by about that much,
    or the average mistyped (unresolved here: recipes.md is the only source on this machine)."""
    paper = AVERAGING_RULES["7 tasks, 100 - ToxiGen"]
    for name, row in TULU2_ROWS.items():
        if name != "tulu2-dpo-7b":
            assert abs(paper(row) - row[7]) <= 0.05, name
    row = TULU2_ROWS["tulu2-dpo-7b"]
    assert {rule: round(f(row), 2) for rule, f in AVERAGING_RULES.items()} == {
        "7 tasks, 100 - ToxiGen": 57.11,
        "7 tasks, raw ToxiGen": 42.97,
        "6 tasks, no ToxiGen": 50.05,
        "6 tasks, no AlpacaEval": 52.45,
        "5 tasks, neither judged task": 43.04,
    }
    assert all(abs(f(row) - 56.3) > 0.05 for f in AVERAGING_RULES.values())
    assert 7 * paper(row) - 7 * 56.3 == pytest.approx(5.7)


def test_delta_only_when_every_task_ran_and_names_the_missing(config):
    entry = run(
        config, "tulu2-7b", TULU2_7B, skipped=("alpaca_eval", "toxigen"), base={k: v - 10 for k, v in TULU2_7B.items()}
    )
    avg = entry["average_as_published"]
    assert avg["value"] is None and avg["delta"] is None and entry["published"]["average_delta"] is None
    assert avg["missing"] == [
        {"task": "alpaca_eval", "reason": "alpaca_eval could not run here"},
        {"task": "toxigen", "reason": "toxigen could not run here"},
    ]
    assert avg["base_value"] is None  # the base model lacks the same two tasks
    full = run(config, "tulu2-7b", TULU2_7B, base={k: v - 10 for k, v in TULU2_7B.items()})["average_as_published"]
    # the base's ToxiGen is 10 points lower (less toxic), which counts +10 after the inversion
    assert full["base_value"] == pytest.approx(full["value"] - 10 * 6 / 7 + 10 / 7)


def test_recipes_without_a_declared_average_report_none(config):
    entry = run(config, "birbal-7b", {"mmlu_em": 0.6})
    assert entry["average_as_published"] is None and entry["published"]["average_delta"] is None


def test_average_declarations_are_checked_against_the_suite(config):
    import copy

    from menagerie.config import load_yaml

    raw = load_yaml(ROOT / "config.yaml")
    bad = copy.deepcopy(raw)
    bad["averages"]["tulu2-avg7"]["tasks"][0]["num_fewshot"] = 5
    with pytest.raises(
        ConfigError,
        match=r"averages.tulu2-avg7: key 'tasks.0.num_fewshot' is 5 but suite task "
        r"'mmlu_0shot' has 0",
    ):
        validate_config(bad)
    bad = copy.deepcopy(raw)
    bad["averages"]["openllm-v1-avg4"]["tasks"][0]["task"] = "arc_25shot"
    with pytest.raises(ConfigError, match=r"names 'arc_25shot', not a task of suite 'openllm-v1'"):
        validate_config(bad)
