"""Rerun only what changed: each rule carries the hash of the settings it reads (menagerie.workflow.RecipePaths
.rule_hash), so an edit reruns the rules that read it and what depends on their outputs, nothing upstream or beside.

Unit tests of the hashes, then real Snakemake (`--summary`, a dry run's plan) on a touched tree of a scratch copy."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from menagerie.config import validate_config
from menagerie.workflow import RecipePaths
from workflow_copy import SNAKEMAKE, copy_workflow

RECIPE = "tiny-tulu2-dpo"


def hashes(raw: dict, recipe: str = RECIPE) -> dict[str, str]:
    """Each rule's settings hash; for the evaluations their path (results/evals/<model key>/<suite hash>/)."""
    paths = RecipePaths(validate_config(copy.deepcopy(raw)))
    out = {f"mixture {p}": paths.rule_hash("mixture", recipe, part=p) for p in ("sft", "dpo")}
    out["contamination"] = paths.rule_hash("contamination", recipe)
    out.update({f"evaluate {w}": paths.evaluations(recipe)[w] for w in ("base", "final")})
    out.update({f"train {s}": paths.rule_hash("train", recipe, stage=s) for s in ("sft", "dpo")})
    return out  # no merge: the twin fine-tunes fully (a merge's hash: test_a_merge_dtype_edit_reruns_the_merge_only)


def changed(raw: dict, edit) -> set[str]:
    edited = copy.deepcopy(raw)
    edit(edited["recipes"][RECIPE], edited)
    before, after = hashes(raw), hashes(edited)
    return {rule for rule in before if before[rule] != after[rule]}


def set_in(path: str, value):
    def edit(recipe, config):
        *parents, last = path.split(".")
        node = recipe
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (set_in("stages.sft.learning_rate", 5e-4), {"train sft"}),
        (set_in("stages.dpo.beta", 0.2), {"train dpo"}),
        (set_in("data.sft.validation", 32), {"mixture sft"}),
        (set_in("contamination.ngram", 8), {"contamination"}),
        (set_in("eval.batch_size", 3), {"evaluate base", "evaluate final"}),
        (set_in("chat_format", "alpaca"), {"evaluate base", "evaluate final", "train sft", "train dpo"}),
        # where and with what a job runs is no experiment setting: nothing reruns
        (set_in("stages.sft.resources", {"gpus": 0, "gpu_model": None, "mem_gb": 12, "runtime_min": 60}), set()),
        (set_in("stages.sft.save_minutes", 5), set()),
        (set_in("eval.resources", {"gpus": 0, "gpu_model": None, "mem_gb": 12, "runtime_min": 60}), set()),
    ],
)
def test_each_rule_hashes_only_what_it_reads(raw, edit, expected):
    assert changed(raw, edit) == expected


def test_a_merge_dtype_edit_reruns_the_merge_only(raw):
    """A LoRA twin's merge (tiny-platypus2: SFT adapter -> merge): its dtype is read by the merge rule alone."""
    name = "tiny-platypus2"

    def rule_hashes(config: dict) -> dict[str, str]:
        paths = RecipePaths(validate_config(copy.deepcopy(config)))
        return {
            "mixture": paths.rule_hash("mixture", name, part="sft"),
            "train": paths.rule_hash("train", name, stage="sft"),
            "merge": paths.rule_hash("merge", name, stage="sft"),
            "evaluate final": paths.evaluations(name)["final"],
        }

    edited = copy.deepcopy(raw)
    edited["recipes"][name]["stages"]["merge"]["dtype"] = "bfloat16"
    before, after = rule_hashes(raw), rule_hashes(edited)
    assert {rule for rule in before if before[rule] != after[rule]} == {"merge"}


def test_a_dataset_or_suite_entry_reaches_the_rules_that_read_it(raw):
    def dataset_schema(recipe, config):
        config["datasets"]["tiny-prefs"]["count"] = config["datasets"]["tiny-prefs"].get("count", 0) + 1

    assert changed(raw, dataset_schema) == {"mixture dpo"}

    def suite(recipe, config):
        config["suites"]["tiny"][0]["limit"] = 7

    assert changed(raw, suite) == {"contamination", "evaluate base", "evaluate final"}

    def base_model(recipe, config):
        config["models"]["smollm2-135m"]["dtype"] = "float16"

    assert changed(raw, base_model) == {"evaluate base"}  # the final model is an input directory, rebuilt upstream

    def description(recipe, config):
        config["models"]["smollm2-135m"]["description"] = "edited"

    assert changed(raw, description) == set()  # the same weights: the same model key


OVERLAY = """
recipes:
  tiny-rr:
    extends: tiny-tulu2-dpo
    data:
      sft: {sources: [{dataset: tiny-sft, count: 48}], validation: 8}
      dpo: {sources: [{dataset: tiny-prefs, count: 16}]}
    stages:
      sft: {max_steps: 4}
"""


def snakemake(work: Path, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [str(SNAKEMAKE), "--cores", "1", "--configfile", "o.yaml", "--config", "recipe=tiny-rr", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout + run.stderr


def pending(work: Path) -> set[str]:
    """Snakemake's plan (`--summary`): the jobs it would run, as 'rule output'."""
    lines = [line.split("\t") for line in snakemake(work, "--summary").splitlines() if "\t" in line]
    header = next(i for i, cols in enumerate(lines) if cols[0] == "output_file")
    names = lines[header]
    rows = [dict(zip(names, cols)) for cols in lines[header + 1 :]]
    return {f"{r['rule']} {r['output_file']}" for r in rows if r["plan"] != "no update"}


@pytest.fixture(scope="module")
def touched(tmp_path_factory) -> Path:
    """A scratch copy whose every output exists and is recorded with the current settings (`--touch --forceall` over
    empty placeholders): Snakemake's metadata as after a real build, in seconds."""
    work = copy_workflow(tmp_path_factory.mktemp("rerun-scope") / "project")
    (work / "o.yaml").write_text(OVERLAY)
    for output in (line.split("\t")[0] for line in snakemake(work, "--summary").splitlines()[1:] if "\t" in line):
        path = work / output
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    snakemake(work, "--touch", "--forceall")
    assert "Nothing to be done" in snakemake(work, "-n")
    return work


def edited(work: Path, **stages_and_more) -> set[str]:
    overlay = yaml.safe_load(OVERLAY)
    recipe = overlay["recipes"]["tiny-rr"]
    for path, value in stages_and_more.items():
        *parents, last = path.split("__")
        node = recipe
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    (work / "o.yaml").write_text(yaml.safe_dump(overlay))
    try:
        return pending(work)
    finally:
        (work / "o.yaml").write_text(OVERLAY)


def evaluation_jobs(role: str, overlay: dict | None = None) -> set[str]:
    """The evaluate and lm_eval_native jobs of tiny-rr's `role` model (results/evals/<model key>/<suite hash>/)."""
    from menagerie.config import deep_merge, load_yaml

    config = validate_config(
        deep_merge(load_yaml(Path(__file__).resolve().parents[1] / "config.yaml"), overlay or yaml.safe_load(OVERLAY))
    )
    metrics = RecipePaths(config).evaluations("tiny-rr")[role]
    return {f"evaluate {metrics}", f"lm_eval_native {metrics.rsplit('/', 1)[0]}/lm_eval"}


DOWNSTREAM_OF_SFT = {
    "train results/tiny-rr/sft",
    "train results/tiny-rr/dpo",
    *evaluation_jobs("final"),
    "report results/tiny-rr/eval.json",
    "leaderboard results/leaderboard.json",
    "leaderboard results/leaderboard.md",
    "leaderboard results/leaderboard.html",
    "leaderboard results/leaderboard",
}


@pytest.mark.timeout(300)
def test_an_sft_learning_rate_edit_reruns_sft_and_what_follows_only(touched):
    # what follows SFT includes the evaluation of DPO's starting model (the SFT model, for eval.json's Δsft)
    assert edited(touched, stages__sft__learning_rate=5e-4) == DOWNSTREAM_OF_SFT | evaluation_jobs("start")


@pytest.mark.timeout(300)
def test_a_dpo_edit_leaves_sft_and_a_resources_edit_only_the_report(touched):
    plan = edited(touched, stages__dpo__beta=0.2)
    assert plan == DOWNSTREAM_OF_SFT - {"train results/tiny-rr/sft"}
    # eval.json records the whole recipe's hash, so the report (seconds) and the leaderboard follow any recipe edit
    resources = edited(touched, stages__sft__resources={"gpus": 0, "gpu_model": None, "mem_gb": 12, "runtime_min": 60})
    assert resources == {p for p in DOWNSTREAM_OF_SFT if p.split()[0] in ("report", "leaderboard")}


@pytest.mark.timeout(300)
def test_an_eval_edit_reruns_both_evaluations_and_nothing_trained(touched):
    plan = edited(touched, eval__batch_size=3)
    # a new suite hash: the evaluations under it are new jobs, those under the old one stay as they are
    overlay = yaml.safe_load(OVERLAY)
    overlay["recipes"]["tiny-rr"]["eval"] = {"batch_size": 3}
    new = {job for role in ("base", "final", "start") for job in evaluation_jobs(role, overlay)}
    assert new <= plan and not new & {job for role in ("base", "final") for job in evaluation_jobs(role)}
    assert not {p for p in plan if p.split()[0] in ("train", "merge", "mixture", "contamination", "dataset", "model")}
