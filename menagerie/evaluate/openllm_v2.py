"""Open LLM Leaderboard v2 scores: lm-eval's `leaderboard` benchmarks rescaled between the random baseline and 100.

The leaderboard ran lm-eval's `leaderboard` group (0.4.13: leaderboard_bbh (24 subtasks, 3-shot), leaderboard_gpqa
(diamond / extended / main, 0-shot), leaderboard_math_hard (7 subtasks, 4-shot), leaderboard_ifeval,
leaderboard_mmlu_pro (5-shot), leaderboard_musr (3 subtasks)) and normalised each benchmark when parsing results
(lm-eval itself reports raw scores; the `leaderboard` group's own aggregate mixes metrics of different tasks).
The rule, from the leaderboard's documentation page "Scores Normalization"
(huggingface.co/docs/leaderboards/open_llm_leaderboard/normalization):

- normalize_within_range(value, lower, higher) = (value - lower) / (higher - lower), higher = 1, times 100; a raw
  score below the lower bound is 0;
- the lower bound is the random baseline, 1 / number of choices (GPQA: 4 choices, 0.25);
- benchmarks with subtasks (BBH, MuSR) normalise every subtask with its own baseline, then average the normalised
  subtask scores (the page's MuSR example: murder mysteries 2 choices, object placements 5, team allocation 3);
- generative benchmarks (MATH, IFEval) have lower bound 0; IFEval is the mean of instruction-level and prompt-level
  strict accuracy.

Per-subtask BBH choice counts, MMLU-Pro's 10 choices (0.1) and which metric each benchmark reads (acc_norm for BBH,
GPQA and MuSR; acc for MMLU-Pro; exact_match for MATH) come from the normalisation notebook that page links (Colab
1-aPrFJjwdifhVLxzJcsYXeebqNi_5vaw), as reproduced in public code. The leaderboard's average is the mean of the six
normalised benchmark scores.
"""

from __future__ import annotations

import math

from menagerie.errors import MenagerieError

BBH_CHOICES = {
    "sports_understanding": 2,
    "tracking_shuffled_objects_three_objects": 3,
    "navigate": 2,
    "snarks": 2,
    "date_understanding": 6,
    "reasoning_about_colored_objects": 18,
    "object_counting": 19,
    "logical_deduction_seven_objects": 7,
    "geometric_shapes": 11,
    "web_of_lies": 2,
    "movie_recommendation": 6,
    "logical_deduction_five_objects": 5,
    "salient_translation_error_detection": 6,
    "disambiguation_qa": 3,
    "temporal_sequences": 4,
    "hyperbaton": 2,
    "logical_deduction_three_objects": 3,
    "causal_judgement": 2,
    "formal_fallacies": 2,
    "tracking_shuffled_objects_seven_objects": 7,
    "ruin_names": 6,
    "penguins_in_a_table": 5,
    "boolean_expressions": 2,
    "tracking_shuffled_objects_five_objects": 5,
}
MUSR_CHOICES = {"murder_mysteries": 2, "object_placements": 5, "team_allocation": 3}

# benchmark -> how its normalised score is computed from lm-eval's results
BENCHMARKS: dict[str, dict] = {
    "bbh": {"metric": "acc_norm,none", "subtasks": {f"leaderboard_bbh_{name}": n for name, n in BBH_CHOICES.items()}},
    "gpqa": {"result": "leaderboard_gpqa", "metric": "acc_norm,none", "choices": 4},
    "math_hard": {"result": "leaderboard_math_hard", "metric": "exact_match,none", "choices": 0},
    "ifeval": {
        "result": "leaderboard_ifeval",
        "mean_of": ("inst_level_strict_acc,none", "prompt_level_strict_acc,none"),
    },
    "mmlu_pro": {"result": "leaderboard_mmlu_pro", "metric": "acc,none", "choices": 10},
    "musr": {
        "metric": "acc_norm,none",
        "subtasks": {f"leaderboard_musr_{name}": n for name, n in MUSR_CHOICES.items()},
    },
}


def lower_bound(num_choices: int) -> float:
    """The random baseline: 1 / number of choices; 0 for generative tasks (num_choices 0)."""
    return 1.0 / num_choices if num_choices > 0 else 0.0


def normalize_within_range(value: float, lower: float, higher: float = 1.0) -> float:
    return (value - lower) / (higher - lower)


def normalized(value: float, num_choices: int) -> float:
    """One score on the leaderboard's 0-100 scale: 0 at (or below) the random baseline, 100 at a perfect score."""
    lower = lower_bound(num_choices)
    return 0.0 if value < lower else normalize_within_range(value, lower, 1.0) * 100


def _value(results: dict, name: str, key: str) -> float:
    try:
        value = results[name][key]
    except KeyError:
        raise MenagerieError(
            f"Open LLM Leaderboard v2: lm-eval results have no '{key}' for '{name}' (got {sorted(results)})"
        ) from None
    if not isinstance(value, (int, float)):
        raise MenagerieError(f"Open LLM Leaderboard v2: '{name}' '{key}' is {value!r}, not a number")
    return float(value)


def _stderr(results: dict, name: str, key: str) -> float | None:
    metric, _, filt = key.partition(",")
    value = (results.get(name) or {}).get(f"{metric}_stderr,{filt}")
    return float(value) if isinstance(value, (int, float)) else None


def benchmark_score(benchmark: str, results: dict) -> dict:
    """{value, stderr, raw, parts} of one benchmark, normalised. stderr is the raw standard error carried through
    the same linear rescaling (the clipping at 0 ignored; None where lm-eval reports none)."""
    if benchmark not in BENCHMARKS:
        raise MenagerieError(
            f"Open LLM Leaderboard v2: unknown benchmark '{benchmark}' (known: {', '.join(BENCHMARKS)})"
        )
    spec = BENCHMARKS[benchmark]
    if "subtasks" in spec:
        parts, errors = {}, []
        for name, choices in spec["subtasks"].items():
            raw = _value(results, name, spec["metric"])
            parts[name] = {
                "raw": raw,
                "num_choices": choices,
                "lower_bound": lower_bound(choices),
                "normalized": normalized(raw, choices),
            }
            se = _stderr(results, name, spec["metric"])
            errors.append(None if se is None else se * 100 / (1 - lower_bound(choices)))
        value = sum(p["normalized"] for p in parts.values()) / len(parts)
        stderr = math.sqrt(sum(e * e for e in errors)) / len(errors) if None not in errors else None
        return {"value": value, "stderr": stderr, "parts": parts}
    if "mean_of" in spec:
        raws = [_value(results, spec["result"], key) for key in spec["mean_of"]]
        errors = [_stderr(results, spec["result"], key) for key in spec["mean_of"]]
        stderr = 100 * sum(errors) / len(errors) if None not in errors else None
        return {
            "value": 100 * sum(raws) / len(raws),
            "stderr": stderr,
            "parts": {key: {"raw": raw, "lower_bound": 0.0} for key, raw in zip(spec["mean_of"], raws)},
        }
    raw = _value(results, spec["result"], spec["metric"])
    se = _stderr(results, spec["result"], spec["metric"])
    return {
        "value": normalized(raw, spec["choices"]),
        "stderr": None if se is None else se * 100 / (1 - lower_bound(spec["choices"])),
        "parts": {
            spec["result"]: {"raw": raw, "num_choices": spec["choices"], "lower_bound": lower_bound(spec["choices"])}
        },
    }


def normalized_entry(benchmark: str, results: dict, entry: dict) -> dict:
    """The fields a suite task with `normalize: <benchmark>` gets in eval.json: the normalised score as `value`
    (already 0-100, the task's `scale` is not applied), the raw score beside it."""
    score = benchmark_score(benchmark, results)
    return {
        "value": score["value"],
        "stderr": score["stderr"],
        "raw_value": entry.get("value"),
        "normalization": {"scheme": "open-llm-leaderboard-v2", "benchmark": benchmark, "parts": score["parts"]},
    }


def leaderboard_average(scores: dict[str, float]) -> float:
    """The leaderboard's average: the mean of the six normalised benchmark scores."""
    missing = sorted(set(BENCHMARKS) - set(scores))
    if missing:
        raise MenagerieError(f"Open LLM Leaderboard v2 average needs all six benchmarks; missing {', '.join(missing)}")
    return sum(scores[b] for b in BENCHMARKS) / len(BENCHMARKS)
