"""Open LLM Leaderboard v2 normalisation (menagerie.evaluate.openllm_v2) against hand-computed numbers, including
the examples of the leaderboard's "Scores Normalization" page. Fast, no model."""

from __future__ import annotations

import pytest

from menagerie.errors import MenagerieError
from menagerie.evaluate import openllm_v2
from menagerie.evaluate.openllm_v2 import BENCHMARKS, benchmark_score, leaderboard_average, normalized


def test_the_documentations_examples():
    # GPQA, 4 choices: (0.6 - 0.25) / 0.75 * 100 = 46.67
    assert normalized(0.6, 4) == pytest.approx(46.6667, abs=1e-4)
    # MuSR: 0.7 with 2 choices -> 40, 0.4 with 5 -> 25, 0.6 with 3 -> 40 (the page uses 0.333 for 1/3), mean 35
    results = {
        "leaderboard_musr_murder_mysteries": {"acc_norm,none": 0.7},
        "leaderboard_musr_object_placements": {"acc_norm,none": 0.4},
        "leaderboard_musr_team_allocation": {"acc_norm,none": 0.6},
    }
    score = benchmark_score("musr", results)
    assert [p["normalized"] for p in score["parts"].values()] == pytest.approx([40.0, 25.0, 40.0])
    assert score["value"] == pytest.approx(35.0)


def test_below_the_random_baseline_is_zero_and_generative_tasks_have_baseline_zero():
    assert normalized(0.2, 4) == 0.0 and normalized(0.25, 4) == 0.0 and normalized(1.0, 4) == 100.0
    assert normalized(0.05, 0) == pytest.approx(5.0)  # MATH: exact match, lower bound 0
    math = benchmark_score(
        "math_hard", {"leaderboard_math_hard": {"exact_match,none": 0.125, "exact_match_stderr,none": 0.01}}
    )
    assert math["value"] == pytest.approx(12.5) and math["stderr"] == pytest.approx(1.0)
    pro = benchmark_score("mmlu_pro", {"leaderboard_mmlu_pro": {"acc,none": 0.37, "acc_stderr,none": 0.009}})
    assert pro["value"] == pytest.approx((0.37 - 0.1) / 0.9 * 100)  # 10 choices
    assert pro["stderr"] == pytest.approx(0.009 * 100 / 0.9)


def test_ifeval_is_the_mean_of_instruction_and_prompt_level_strict_accuracy():
    score = benchmark_score(
        "ifeval",
        {
            "leaderboard_ifeval": {
                "inst_level_strict_acc,none": 0.6,
                "prompt_level_strict_acc,none": 0.5,
                "prompt_level_strict_acc_stderr,none": 0.02,
                "inst_level_strict_acc_stderr,none": "N/A",
            }
        },
    )
    assert score["value"] == pytest.approx(55.0) and score["stderr"] is None


def test_bbh_normalises_each_of_its_24_subtasks_before_averaging():
    assert len(BENCHMARKS["bbh"]["subtasks"]) == 24
    results = {name: {"acc_norm,none": 0.5} for name in BENCHMARKS["bbh"]["subtasks"]}
    # 0.5 is at the baseline of the 8 two-choice tasks (0) and above the rest
    expected = [0.0 if n == 2 else (0.5 - 1 / n) / (1 - 1 / n) * 100 for n in openllm_v2.BBH_CHOICES.values()]
    assert benchmark_score("bbh", results)["value"] == pytest.approx(sum(expected) / 24)
    assert sum(n == 2 for n in openllm_v2.BBH_CHOICES.values()) == 8  # boolean_expressions, causal_judgement,
    # formal_fallacies, hyperbaton, navigate, snarks, sports_understanding, web_of_lies
    # the size-weighted raw group mean lm-eval reports is not used: changing it changes nothing
    assert benchmark_score("bbh", {**results, "leaderboard_bbh": {"acc_norm,none": 0.99}})["value"] == pytest.approx(
        sum(expected) / 24
    )


def test_leaderboard_average_and_errors_name_what_is_missing():
    scores = {"bbh": 30.0, "gpqa": 6.0, "math_hard": 12.0, "ifeval": 60.0, "mmlu_pro": 25.0, "musr": 9.0}
    assert leaderboard_average(scores) == pytest.approx(142.0 / 6)
    with pytest.raises(MenagerieError, match="missing musr"):
        leaderboard_average({k: v for k, v in scores.items() if k != "musr"})
    with pytest.raises(MenagerieError, match=r"no 'acc_norm,none' for 'leaderboard_gpqa'"):
        benchmark_score("gpqa", {"leaderboard_gpqa": {"acc,none": 0.3}})
    with pytest.raises(MenagerieError, match="unknown benchmark 'arc'"):
        benchmark_score("arc", {})


def test_the_eval_json_fields_of_a_normalised_task():
    entry = {"value": 60.0, "stderr": 1.0}
    fields = openllm_v2.normalized_entry(
        "gpqa", {"leaderboard_gpqa": {"acc_norm,none": 0.6, "acc_norm_stderr,none": 0.01}}, entry
    )
    assert fields["value"] == pytest.approx(46.6667, abs=1e-4) and fields["raw_value"] == 60.0
    assert fields["stderr"] == pytest.approx(0.01 * 100 / 0.75)
    assert fields["normalization"]["scheme"] == "open-llm-leaderboard-v2"
    assert fields["normalization"]["parts"]["leaderboard_gpqa"]["lower_bound"] == 0.25
