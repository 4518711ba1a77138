"""Birbal's Natural Instructions sampling: ROUGE-L and exact match, task selection and kinds, buckets (boundaries
included), counts per bucket, seeded draws, the report, the config checks, the tiny NI tasks, and (slow) both CLI
stages on a tiny random Llama."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from menagerie.config import load_yaml, validate_config
from menagerie.data import ni_sampling as ns
from menagerie.data.generate import generate
from menagerie.data.sources import normalize
from menagerie.errors import ConfigError, MissingInputError
from menagerie.inference import ni_predict
from menagerie.ni_settings import predictions_key
from menagerie.io import jsonl_sha256, sha256_file, write_jsonl

REPO = Path(__file__).resolve().parents[1]
EXACT_EDGES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
GEN_EDGES = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
PER_TASK = [350, 350, 300, 300, 250, 250, 200, 150, 100, 50]
SHARE = [0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
SELECTION = {"languages": ["English"], "exclude": ["mmlu"], "task_list": None, "expected_tasks": None}


# ------------------------------------------------------------------------------------------------ ROUGE-L


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        # LCS "the cat on the mat" = 5 of 6 and 6 tokens: 2*5/12
        ("the cat sat on the mat", "the cat is on the mat", Fraction(5, 6)),
        # LCS "the gunman" = 2 of 4 and 4: 2*2/8 (the textbook example where ROUGE-L ignores word order elsewhere)
        ("police killed the gunman", "the gunman kill police", Fraction(1, 2)),
        # LCS "a b" of a 2-token prediction and a 5-token reference: 2*2/7
        ("a b", "a x b y z", Fraction(4, 7)),
        # case and punctuation are not tokens; numbers are
        ("Hello, World!", "hello world", Fraction(1)),
        ("room 101", "room 102", Fraction(1, 2)),
        # nothing in common; an empty side scores 0
        ("yes", "no", Fraction(0)),
        ("", "something", Fraction(0)),
        ("...", "!!!", Fraction(0)),
    ],
)
def test_rouge_l_matches_hand_computed_values(prediction, reference, expected):
    assert ns.rouge_l(prediction, reference) == expected


def test_lcs_is_symmetric_and_order_sensitive():
    a, b = "a b c d e".split(), "b d a e".split()
    assert ns.lcs_length(a, b) == ns.lcs_length(b, a) == 3  # b d e
    assert ns.lcs_length(a, list(reversed(a))) == 1


def test_instance_score_takes_the_best_reference():
    refs = ["the gunman kill police", "police killed the gunman"]
    assert ns.instance_score("generation", "police killed the gunman", refs) == 1
    assert ns.instance_score("generation", "police killed him", refs) == Fraction(2 * 2, 3 + 4)


def test_rouge_l_agrees_with_the_rouge_score_package():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = [
        ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumps over the fox!"),
        ("car blue the liked man old the", "car the blue liked old man the"),
        ("yadot rood neerg eht", "yadot rood neerg eht dehsaw rehcaet eht"),
        ("Positive", "Negative"),
        ("it is 42, not 24", "42 is it"),
    ]
    for prediction, reference in pairs:
        assert float(ns.rouge_l(prediction, reference)) == pytest.approx(
            scorer.score(reference, prediction)["rougeL"].fmeasure, abs=1e-12
        ), (prediction, reference)


# ------------------------------------------------------------------------------------------------ exact match


def test_exact_match_strips_but_keeps_case_and_accepts_any_reference():
    assert ns.exact_match(" Positive ", ["Positive"])
    assert not ns.exact_match("positive", ["Positive"])  # case-sensitive, as [BBc]
    assert ns.exact_match("cold", ["chilly", "cold"])
    assert not ns.exact_match("Positive.", ["Positive"])
    assert ns.instance_score("exact_match", "Negative", ["Positive"]) == 0


def test_prediction_stops_at_the_first_blank_line():
    assert ns.clean_prediction(" Positive\n\nInput: The movie was awful.\nOutput: Negative") == "Positive"
    assert ns.clean_prediction("line one\nline two\n\nmore") == "line one\nline two"


def test_task_kind_is_one_word_answers():
    one_word = {"Instances": [{"input": "x", "output": ["Yes"]}, {"input": "y", "output": ["No", "Nope"]}]}
    two_words = {"Instances": [{"input": "x", "output": ["Yes"]}, {"input": "y", "output": ["not sure"]}]}
    assert ns.task_kind(one_word, 1) == "exact_match"
    assert ns.task_kind(two_words, 1) == "generation"
    assert ns.task_kind(two_words, 2) == "exact_match"


# ------------------------------------------------------------------------------------------------ buckets


@pytest.mark.parametrize(
    "score, bucket",
    [
        (Fraction(0), 0),
        (Fraction(199, 1000), 0),
        (Fraction(1, 5), 1),  # exactly 0.2: the second bucket [0.2, 0.3)
        (Fraction(3, 10), 2),
        (Fraction(6, 20), 2),
        (Fraction(7999, 10000), 6),
        (Fraction(4, 5), None),  # exactly 0.8: outside [0.7, 0.8), not sampled
        (Fraction(1), None),
    ],
)
def test_generation_buckets_on_and_near_the_edges(score, bucket):
    assert ns.bucket_index(score, GEN_EDGES) == bucket


@pytest.mark.parametrize(
    "score, bucket",
    [
        (Fraction(0), 0),
        (Fraction(1, 10), 1),
        (Fraction(9, 10), 9),
        (Fraction(1), 9),  # a perfect task is in the top bucket [0.9, 1.0] ([BBc]: 50 rows)
        (Fraction(29, 100), 2),
    ],
)
def test_accuracy_buckets_close_at_one(score, bucket):
    assert ns.bucket_index(score, EXACT_EDGES) == bucket
    assert ns.bucket_label(9, EXACT_EDGES) == "[0.9, 1.0]" and ns.bucket_label(6, GEN_EDGES) == "[0.7, 0.8)"


def test_a_task_mean_of_exactly_a_bucket_edge_lands_above_it():
    # 0.1 + 0.2 + 0.6 is 0.9000000000000001 in floats; the task mean is kept exact, so it is 3/10 on the nose
    scores = [Fraction(1, 10), Fraction(1, 5), Fraction(3, 5)]
    mean = sum(scores, Fraction(0)) / len(scores)
    assert mean == Fraction(3, 10) and ns.bucket_index(mean, EXACT_EDGES) == 3
    # and a ROUGE-L of exactly 0.2 (1 common token of 5 + 5) is in [0.2, 0.3)
    assert ns.rouge_l("a b c d e", "a x y z w") == Fraction(1, 5)
    assert ns.bucket_index(ns.rouge_l("a b c d e", "a x y z w"), GEN_EDGES) == 1


# ------------------------------------------------------------------------------------------------ counts


def test_apportion_sums_to_the_total_and_breaks_ties_by_name():
    assert ns.apportion(10, {"b": Fraction(1), "a": Fraction(1), "c": Fraction(1)}) == {"a": 4, "b": 3, "c": 3}
    assert ns.apportion(7, {"x": Fraction(0), "y": Fraction(2), "z": Fraction(5)}) == {"x": 0, "y": 2, "z": 5}
    assert ns.apportion(5, {"x": Fraction(0)}) == {"x": 0}
    assert sum(ns.apportion(99991, {str(i): Fraction(i % 7 + 1) for i in range(463)}).values()) == 99991


def test_allocate_caps_tasks_at_their_pool_and_moves_the_rest_by_weight():
    weights = {"a": Fraction(4), "b": Fraction(1), "c": Fraction(1)}
    assert ns.allocate(60, weights, {"a": 100, "b": 100, "c": 100}) == {"a": 40, "b": 10, "c": 10}
    # a can give only 13: its 27 go to b and c by weight
    assert ns.allocate(60, weights, {"a": 13, "b": 100, "c": 100}) == {"a": 13, "b": 24, "c": 23}
    # every pool short: all of every pool, no more
    assert ns.allocate(60, weights, {"a": 5, "b": 6, "c": 7}) == {"a": 5, "b": 6, "c": 7}
    # a weight of 0 (an unbucketed task) never receives rows, even when others run short
    assert ns.allocate(60, {"a": Fraction(1), "z": Fraction(0)}, {"a": 10, "z": 100}) == {"a": 10, "z": 0}


def test_paper_shares_with_one_task_per_bucket():
    spec = {"count": 50000, "edges": GEN_EDGES, "share": SHARE}
    scores = {f"t{i}": Fraction(str(GEN_EDGES[i])) for i in range(7)} | {"easy": Fraction(9, 10)}
    planned = ns.plan(spec, scores, {t: 10**6 for t in scores})
    assert [planned[f"t{i}"]["requested"] for i in range(7)] == [20000] + [5000] * 6  # [BB]: 40% / 10% each
    assert planned["easy"] == {"bucket": None, "requested": 0, "obtained": 0}


def test_shares_split_within_a_bucket_and_empty_buckets_go_to_the_others():
    spec = {"count": 100, "edges": GEN_EDGES, "share": SHARE}
    # two tasks in [0, 0.2) share its 0.4, one in [0.5, 0.6) has 0.1; the four empty buckets' 0.4 goes in proportion
    scores = {"low1": Fraction(1, 10), "low2": Fraction(0), "mid": Fraction(11, 20)}
    planned = ns.plan(spec, scores, {t: 1000 for t in scores})
    assert {t: p["requested"] for t, p in planned.items()} == {"low1": 40, "low2": 40, "mid": 20}
    assert {t: p["bucket"] for t, p in planned.items()} == {"low1": 0, "low2": 0, "mid": 4}


def test_per_task_counts_are_bbc_rows_scaled_to_the_count():
    spec = {"count": 650, "edges": EXACT_EDGES, "per_task": PER_TASK}
    scores = {"bad": Fraction(0), "half": Fraction(1, 2), "perfect": Fraction(1)}
    planned = ns.plan(spec, scores, {t: 10**6 for t in scores})
    assert {t: p["requested"] for t, p in planned.items()} == {"bad": 350, "half": 250, "perfect": 50}
    doubled = ns.plan({**spec, "count": 1300}, scores, {t: 10**6 for t in scores})
    assert {t: p["requested"] for t, p in doubled.items()} == {"bad": 700, "half": 500, "perfect": 100}


# ------------------------------------------------------------------------------------------------ sample()


def _task(name: str, outputs: list[list[str]], language: str = "English", source: str = "x") -> dict:
    return {
        "task_name": name,
        "Definition": [f"Do {name}."],
        "Categories": ["Test"],
        "Source": [source],
        "Input_language": [language],
        "Output_language": [language],
        "Instruction_language": ["English"],
        "Positive Examples": [{"input": "example input", "output": outputs[0][0], "explanation": "."}],
        "Instances": [
            {"id": f"{name}-{i}", "input": f"input {i} of {name}", "output": out} for i, out in enumerate(outputs)
        ],
    }


def _world(tmp_path: Path, correct: dict[str, int], n: int = 20) -> tuple[Path, Path]:
    """Exact-match tasks whose first `correct[task]` instances the 'model' got right, a generation task, a French
    and an MMLU task; writes tasks.jsonl and predictions.jsonl."""
    tasks = [_task(name, [["yes"]] * n) for name in correct]
    tasks.append(_task("gen_task", [["the answer is here"]] * n))
    tasks.append(_task("french_task", [["oui"]] * n, language="French"))
    tasks.append(_task("task1_mmmlu_answer_generation_x", [["A"]] * n, source="mmmlu"))
    preds = [
        {"task": t["task_name"], "id": inst["id"], "prediction": "yes" if i < correct[t["task_name"]] else "no"}
        for t in tasks[: len(correct)]
        for i, inst in enumerate(t["Instances"])
    ]
    preds += [{"task": "gen_task", "id": inst["id"], "prediction": "the answer"} for inst in tasks[-3]["Instances"]]
    write_jsonl(tasks, tmp_path / "tasks.jsonl")
    write_jsonl(preds, tmp_path / "predictions.jsonl")
    return tmp_path / "tasks.jsonl", tmp_path / "predictions.jsonl"


def _entry(kind: str, count: int, seed: int = 42, **extra) -> dict:
    spec = {
        "kind": kind,
        "count": count,
        "seed": seed,
        "exact_match_max_words": 1,
        "selection": dict(SELECTION),
        "inference": {"shots": 1},
        "pool": "incorrect" if kind == "exact_match" else "all",
        "max_words": None,
    }
    spec.update(
        {"edges": EXACT_EDGES, "per_task": PER_TASK} if kind == "exact_match" else {"edges": GEN_EDGES, "share": SHARE}
    )
    spec.update(extra)
    return {"source": "ni_sampling", "schema": "open_platypus", "tasks": "t", "model": "m", "ni": spec}


def test_sample_counts_per_bucket_pools_and_report(tmp_path):
    tasks, preds = _world(tmp_path, {"acc05": 1, "acc50": 10, "acc95": 19, "acc100": 20})
    rows, report = ns.sample("ni-x", _entry("exact_match", 40), tasks, preds)
    t = report["tasks"]
    assert {k: (v["score"], v["bucket"], v["pool"]) for k, v in t.items()} == {
        "acc05": (0.05, "[0.0, 0.1)", 19),
        "acc50": (0.5, "[0.5, 0.6)", 10),
        "acc95": (0.95, "[0.9, 1.0]", 1),
        "acc100": (1.0, "[0.9, 1.0]", 0),
    }
    # weights 350 : 250 : 50 : 50 of 40 -> 20, 14, 3, 3 (largest remainder); acc95 and acc100 cannot give theirs
    assert {k: v["requested"] for k, v in t.items()} == {"acc05": 20, "acc50": 14, "acc95": 3, "acc100": 3}
    assert {k: v["obtained"] for k, v in t.items()} == {"acc05": 19, "acc50": 10, "acc95": 1, "acc100": 0}
    assert Counter(r["data_source"] for r in rows) == {
        "natural_instructions/exact_match/acc05": 19,
        "natural_instructions/exact_match/acc50": 10,
        "natural_instructions/exact_match/acc95": 1,
    }
    # only wrong answers are drawn: the predictions were wrong from index `correct` on
    assert all(
        int(r["id"].rsplit("-", 1)[1]) >= {"acc05": 1, "acc50": 10, "acc95": 19}[r["id"].rsplit("-", 1)[0]]
        for r in rows
    )
    assert report["requested"] == 40 and report["obtained"] == len(rows) == 30
    assert any("30 of 40" in w for w in report["warnings"])
    buckets = {b["bucket"]: (b["tasks"], b["requested"], b["obtained"]) for b in report["buckets"] if b["tasks"]}
    assert buckets["[0.9, 1.0]"] == (["acc100", "acc95"], 6, 1)
    assert report["selection"]["excluded"] == {
        "language": ["french_task"],
        "exclude:mmlu": ["task1_mmmlu_answer_generation_x"],
    }
    assert report["selection"]["other_kind"] == 1 and report["seed"] == 42
    assert report["sha256"] == {
        "tasks": sha256_file(tasks),
        "predictions": sha256_file(preds),
        "rows": jsonl_sha256(rows),
    }
    # the rows are the Open-Platypus schema the mixtures read, with the task as their origin
    canonical = normalize(rows, "open_platypus", "ni-x", "test")
    assert canonical[0]["origin"].startswith("natural_instructions/exact_match/")
    assert rows[0]["instruction"].startswith("Do acc") and rows[0]["output"] == "yes"


def test_a_full_task_gives_its_rows_to_the_others(tmp_path):
    tasks, preds = _world(tmp_path, {"acc05": 2, "acc50": 20, "acc85": 34}, n=40)
    rows, report = ns.sample("ni-x", _entry("exact_match", 50), tasks, preds)
    t = report["tasks"]
    # weights 350 : 250 : 100 of 50 -> 25, 17.86, 7.14 -> 25, 18, 7
    assert {k: v["requested"] for k, v in t.items()} == {"acc05": 25, "acc50": 18, "acc85": 7}
    # acc85 holds 6 wrong answers: its 7th row goes to the others by weight (to acc05, by largest remainder)
    assert {k: v["pool"] for k, v in t.items()} == {"acc05": 38, "acc50": 20, "acc85": 6}
    assert {k: v["obtained"] for k, v in t.items()} == {"acc05": 26, "acc50": 18, "acc85": 6}
    assert len(rows) == 50 and "warnings" not in report


def test_generation_kind_scores_rouge_and_draws_from_all_instances(tmp_path):
    tasks, preds = _world(tmp_path, {"acc50": 10})
    rows, report = ns.sample("ni-g", _entry("generation", 8), tasks, preds)
    gen = report["tasks"]["gen_task"]
    assert report["tasks"].keys() == {"gen_task"}
    # "the answer" vs "the answer is here": 2*2 / (2 + 4)
    assert gen["score"] == round(2 / 3, 6) and gen["bucket"] == "[0.6, 0.7)" and gen["metric"] == "rouge_l_f1"
    assert gen["pool"] == 20 and gen["obtained"] == 8 == len(rows)


def test_draws_are_seeded_per_task(tmp_path):
    tasks, preds = _world(tmp_path, {"acc05": 1, "acc50": 10})
    first, report = ns.sample("ni-x", _entry("exact_match", 20), tasks, preds)
    again, _ = ns.sample("ni-x", _entry("exact_match", 20), tasks, preds)
    other, _ = ns.sample("ni-x", _entry("exact_match", 20, seed=7), tasks, preds)
    assert first == again
    assert [r["id"] for r in first] != [r["id"] for r in other]
    assert Counter(r["data_source"] for r in first) == Counter(r["data_source"] for r in other)
    # a task's draw depends on its own pool and count only: the same rows as drawing it alone
    pool = [i for i in range(1, 20)]
    alone = [f"acc05-{i}" for i in ns.draw(pool, report["tasks"]["acc05"]["obtained"], 42, "acc05")]
    assert [r["id"] for r in first if r["id"].startswith("acc05")] == alone


def test_max_words_leaves_long_instances_out_of_the_pool(tmp_path):
    tasks, preds = _world(tmp_path, {"acc05": 1})
    # Definition "Do acc05." (2 words) + input "input 3 of acc05" (4 words) = 6 words
    _, report = ns.sample("ni-x", _entry("exact_match", 10, max_words=5), tasks, preds)
    assert report["tasks"]["acc05"]["pool"] == 0
    _, report = ns.sample("ni-x", _entry("exact_match", 10, max_words=6), tasks, preds)
    assert report["tasks"]["acc05"]["pool"] == 19


def test_task_list_selects_and_a_missing_one_says_how_to_get_it(tmp_path):
    tasks, preds = _world(tmp_path, {"acc05": 1, "acc50": 10})
    (tmp_path / "list.txt").write_text("acc50\nnot_in_the_data.json\n")
    entry = _entry(
        "exact_match", 10, selection={**SELECTION, "task_list": str(tmp_path / "list.txt"), "expected_tasks": 463}
    )
    rows, report = ns.sample("ni-x", entry, tasks, preds)
    assert list(report["tasks"]) == ["acc50"]
    assert report["selection"]["task_list_missing"] == ["not_in_the_data"]
    assert "task_list" in report["selection"]["excluded"] and any("463" in w for w in report["warnings"])
    entry["ni"]["selection"]["task_list"] = str(tmp_path / "absent.txt")
    with pytest.raises(MissingInputError, match=r"selected_NI_tasks\.txt.*task_list: null"):
        ns.sample("ni-x", entry, tasks, preds)


# ------------------------------------------------------------------------------------------------ config


@pytest.fixture(scope="module")
def raw_config() -> dict:
    return load_yaml(REPO / "config.yaml")


def test_shipped_ni_datasets_follow_the_paper(raw_config):
    datasets = validate_config(copy.deepcopy(raw_config))["datasets"]
    exact, gen = datasets["ni-exact-match"]["ni"], datasets["ni-generation"]["ni"]
    assert (exact["kind"], exact["count"], gen["kind"], gen["count"]) == ("exact_match", 50000, "generation", 50000)
    assert gen["edges"] == GEN_EDGES and gen["share"] == SHARE  # [BB] §3
    assert exact["edges"] == EXACT_EDGES and exact["per_task"] == PER_TASK  # [BBc]
    assert exact["selection"]["expected_tasks"] == 463 and exact["selection"]["exclude"] == ["mmlu"]
    assert [
        datasets[f"ni-{k}-{s}"]["ni"]["count"] for s in ("400k", "700k") for k in ("exact-match", "generation")
    ] == [110000, 110000, 220000, 220000]
    # the tiny twins keep the rules and change only sizes, task list and inference budget
    for kind in ("exact-match", "generation"):
        real, tiny = datasets[f"ni-{kind}"]["ni"], datasets[f"tiny-ni-{kind}"]["ni"]
        differing = {k for k in real if real[k] != tiny[k]}
        assert differing == {"count", "selection", "inference"}, differing


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["ni-generation"]["ni"].update(per_task=[1] * 7), "exactly one of 'share'"),
        (lambda d: d["ni-generation"]["ni"].update(share=[0.5, 0.5]), "needs one value per bucket (7"),
        (lambda d: d["ni-generation"]["ni"].update(share=[0.4, 0.4, 0.4, 0, 0, 0, 0]), "sum to at most 1"),
        (lambda d: d["ni-exact-match"]["ni"].update(edges=[0.0, 0.5, 0.5, 1.0]), "must increase strictly"),
        (lambda d: d["ni-exact-match"].update(tasks="tiny-sft"), "expected natural_instructions"),
        (lambda d: d["ni-exact-match"].update(model="gpt-5"), "unknown model 'gpt-5'"),
        (lambda d: d["ni-exact-match"].update(schema="tulu_messages"), "must be open_platypus"),
        (lambda d: d["ni-exact-match"]["ni"].pop("kind"), "missing required key 'kind'"),
    ],
)
def test_malformed_ni_settings_are_one_clear_message(raw_config, mutate, fragment):
    raw = copy.deepcopy(raw_config)
    for name in ("ni-exact-match", "ni-generation"):  # unshare the YAML anchors before mutating
        raw["datasets"][name] = copy.deepcopy(raw["datasets"][name])
    mutate(raw["datasets"])
    with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
        validate_config(raw)
    assert "dataset 'ni-" in str(info.value)


def test_predictions_are_shared_by_datasets_that_agree_on_inference(raw_config):
    config = validate_config(copy.deepcopy(raw_config))
    keys = {
        name: predictions_key(config, name)
        for name in config["datasets"]
        if config["datasets"][name]["source"] == "ni_sampling"
    }
    assert len({keys[n] for n in keys if not n.startswith("tiny-")}) == 1
    assert keys["tiny-ni-exact-match"] == keys["tiny-ni-generation"] != keys["ni-exact-match"]
    config["datasets"]["ni-generation-700k"]["ni"] = copy.deepcopy(config["datasets"]["ni-generation-700k"]["ni"])
    config["datasets"]["ni-generation-700k"]["ni"]["inference"] = {
        **config["datasets"]["ni-generation-700k"]["ni"]["inference"],
        "shots": 3,
    }
    assert predictions_key(config, "ni-generation-700k") != keys["ni-generation"]


# ------------------------------------------------------------------------------------------------ tiny tasks


def test_tiny_ni_tasks_are_real_schema_and_survive_birbals_filters():
    tasks = generate("ni_tasks", 16, 17, "natural_instructions")
    assert tasks == generate("ni_tasks", 16, 17, "natural_instructions")
    assert tasks != generate("ni_tasks", 16, 18, "natural_instructions")
    fields = {
        "task_name",
        "Definition",
        "Positive Examples",
        "Instances",
        "Categories",
        "Source",
        "Input_language",
        "Output_language",
        "Instruction_language",
    }
    assert all(fields <= task.keys() and len(task["Instances"]) == 16 for task in tasks)
    kinds = Counter(ns.task_kind(t, 1) for t in tasks if ns.exclusion(t, SELECTION, None) is None)
    assert kinds == {"exact_match": 3, "generation": 3}
    assert {ns.exclusion(t, SELECTION, None) for t in tasks} == {None, "language", "exclude:mmlu"}
    inputs = [i["input"] for t in tasks for i in t["Instances"] + t["Positive Examples"]]
    assert len(inputs) == len(set(inputs)) and min(len(i.split()) for i in inputs) >= 5
    rows = normalize(tasks, "natural_instructions", "tiny-ni-tasks", "generated")  # the loader accepts them
    assert len(rows) == 8 * 16
    with pytest.raises(ValueError, match="at most 37 instances per task"):
        generate("ni_tasks", 38, 1, "natural_instructions")


def test_few_shot_prompt_layout():
    task = _task("t", [["yes"], ["no"]])
    task["Positive Examples"].append({"input": "second", "output": "no", "explanation": "."})
    prompt = ns.few_shot_prompt(task, "  the question  ", 1)
    assert prompt == "Definition: Do t.\n\nInput: example input\nOutput: yes\n\nInput: the question\nOutput:"
    assert ns.few_shot_prompt(task, "q", 5).count("Input:") == 3


# ------------------------------------------------------------------------------------------------ the CLI (slow)


@pytest.mark.slow
def test_cli_predicts_and_samples_on_a_tiny_llama(tmp_path, make_tiny_tokenizer):
    from tiny_models import build_tiny_llama

    model = build_tiny_llama(tmp_path / "model", make_tiny_tokenizer(add_bos=True))
    write_jsonl(generate("ni_tasks", 6, 3, "natural_instructions"), tmp_path / "tasks.jsonl")
    raw = load_yaml(REPO / "config.yaml")
    raw["models"]["tiny-llama"] = {"source": "local", "path": str(model), "dtype": "float32"}
    for name in ("tiny-ni-exact-match", "tiny-ni-generation"):
        raw["datasets"][name] = {**copy.deepcopy(raw["datasets"][name]), "model": "tiny-llama"}
        # hf: vLLM's CPU attention kernels need head_dim >= 32 and the tiny Llama has 16 (the vLLM path is checked
        # on SmolLM2 below)
        raw["datasets"][name]["ni"]["inference"] = {"shots": 2, "max_new_tokens": 6, "batch_size": 4, "backend": "hf"}
    config = validate_config(raw)
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "ni_sample.py"),
                *args,
                "--config",
                str(tmp_path / "config.json"),
                "--tasks",
                str(tmp_path / "tasks.jsonl"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    pred = cli(
        "predict",
        "--dataset",
        "tiny-ni-exact-match",
        "--model",
        str(model),
        "--out",
        str(tmp_path / "pred.jsonl"),
        "--provenance",
        str(tmp_path / "prov.json"),
    )
    assert pred.returncode == 0, pred.stderr[-3000:]
    predictions = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 * 6  # 6 selected tasks (the French and the MMLU one dropped) x 6 instances
    assert {p["task"].split("_")[0] for p in predictions} == {f"task90{i}" for i in range(1, 7)}
    assert all(isinstance(p["prediction"], str) and "\n\n" not in p["prediction"] for p in predictions)
    provenance = json.loads((tmp_path / "prov.json").read_text())
    assert provenance["stage"] == "ni_predict" and provenance["instances"] == 36
    assert provenance["input_sha256"]["tasks"] == sha256_file(tmp_path / "tasks.jsonl")

    for name, kind in (("tiny-ni-exact-match", "exact_match"), ("tiny-ni-generation", "generation")):
        out, report_path = tmp_path / f"{name}.jsonl", tmp_path / f"{name}_report.json"
        done = cli(
            "sample",
            "--dataset",
            name,
            "--predictions",
            str(tmp_path / "pred.jsonl"),
            "--out",
            str(out),
            "--report",
            str(report_path),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(report_path.read_text())
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert report["kind"] == kind and len(report["tasks"]) == 3 and report["rows"] == len(rows)
        assert report["sha256"]["rows"] == sha256_file(out)
        assert all(r["data_source"].startswith(f"natural_instructions/{kind}/") for r in rows)
        scored = [t for t in report["tasks"].values() if t["scored"] == 6]
        assert len(scored) == 3 and all(t["score"] is not None for t in scored)

    # the real recipe's task list is not here: one sentence, before any model is loaded
    config["datasets"]["tiny-ni-exact-match"]["ni"]["selection"]["task_list"] = "resources/birbal/none.txt"
    (tmp_path / "config.json").write_text(json.dumps(config))
    missing = cli(
        "predict",
        "--dataset",
        "tiny-ni-exact-match",
        "--model",
        str(tmp_path / "no-model"),
        "--out",
        str(tmp_path / "p2.jsonl"),
        "--provenance",
        str(tmp_path / "p2.json"),
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: dataset 'tiny-ni-exact-match': the NI task list")
    assert len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p2.jsonl").exists()


@pytest.mark.slow
def test_vllm_and_hf_ni_predictions_are_identical_on_smollm2(tmp_path, smollm2_dir):
    """The default NI inference backend (vLLM) against transformers generate, greedy, float32, the real 135M model."""
    from transformers import AutoTokenizer

    tasks = [t for t in generate("ni_tasks", 3, 5, "natural_instructions") if t["task_name"].startswith("task90")][:3]
    prompts = [ns.few_shot_prompt(t, inst["input"], 2) for t in tasks for inst in t["Instances"]]
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    generate_vllm, engine = ni_predict.vllm_generator(smollm2_dir, tokenizer, "float32", 8, 0)
    limit = max(len(tokenizer(p)["input_ids"]) for p in prompts) - 1  # the longest prompt is skipped by both
    out_vllm = generate_vllm(prompts, 12, limit)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype="float32").eval()
    out_hf = ni_predict.greedy_generate(model, tokenizer, prompts, 12, 1, limit)
    assert engine["dtype"] == "float32"
    assert sum(t is None for t in out_vllm) >= 1 and sum(t is not None for t in out_vllm) >= 6
    assert [ns.clean_prediction(t) if t is not None else None for t in out_vllm] == [
        ns.clean_prediction(t) if t is not None else None for t in out_hf
    ]
