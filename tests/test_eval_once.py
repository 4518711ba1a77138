"""Evaluate each model once (issue 17 #4): evaluations are keyed by the model's identity and a hash of the suite
settings that score it (results/evals/<model key>/<suite hash>/, menagerie.workflow.RecipePaths.eval_dir), so
recipes sharing a base model and suite share one evaluation job. Path logic offline on the shipped config, then real
Snakemake dry runs in a throwaway copy of the workflow: the Tulu 2 7B recipes together, and a second twin build on a
results tree where the first twin's evaluations exist."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from menagerie.config import ConfigError, load_config, validate_config
from menagerie.errors import MenagerieError
from menagerie.workflow import RecipePaths

ROOT = Path(__file__).resolve().parents[1]
TULU2_7B = ["tulu2-7b", "tulu2-dpo-7b", "tulu2-qlora-7b", "codetulu2-7b"]  # every 7B recipe of Tulu 2 ([T2])
HEX16 = r"[0-9a-f]{16}"


@pytest.fixture(scope="module")
def paths() -> RecipePaths:
    return RecipePaths(load_config(ROOT / "config.yaml"))


def edited(raw: dict, edit) -> RecipePaths:
    config = copy.deepcopy(raw)
    edit(config)
    return RecipePaths(validate_config(config))


# ------------------------------------------------------------------------------------------- the key scheme


def test_model_keys_name_the_weights(paths):
    # a prepared model: its name and the hash of its models: entry (where its weights come from)
    assert re.fullmatch(r"llama-2-7b@[0-9a-f]{8}", paths.model_key("resources/models/llama-2-7b"))
    assert paths.model_key("resources/models/llama-2-7b") != paths.model_key("resources/models/llama-2-13b")
    # a recipe's output: the stage that produced it
    assert paths.model_key("results/tulu2-7b/sft") == "tulu2-7b.sft"
    assert paths.model_key("results/tiny-platypus2/sft_merged") == "tiny-platypus2.sft_merged"
    with pytest.raises(ValueError, match="no model key for 'somewhere/else'"):
        paths.model_key("somewhere/else")


def test_a_models_entry_edit_changes_its_key_unless_it_only_describes(raw):
    before = RecipePaths(validate_config(copy.deepcopy(raw))).model_key("resources/models/smollm2-135m")

    def revision(config):
        config["models"]["llama-2-7b"]["revision"] = "0" * 40

    def description(config):
        config["models"]["smollm2-135m"]["description"] = "edited"

    def dtype(config):
        config["models"]["smollm2-135m"]["dtype"] = "float16"

    assert edited(raw, description).model_key("resources/models/smollm2-135m") == before
    assert edited(raw, dtype).model_key("resources/models/smollm2-135m") != before
    plain = RecipePaths(validate_config(copy.deepcopy(raw))).model_key("resources/models/llama-2-7b")
    assert edited(raw, revision).model_key("resources/models/llama-2-7b") != plain


def test_the_tulu2_7b_recipes_share_one_llama_2_7b_evaluation(paths):
    bases = {name: paths.evaluations(name)["base"] for name in TULU2_7B}
    llama = {bases[n] for n in ("tulu2-7b", "tulu2-dpo-7b", "tulu2-qlora-7b")}
    assert len(llama) == 1
    assert re.fullmatch(rf"results/evals/llama-2-7b@[0-9a-f]{{8}}/{HEX16}/metrics\.json", llama.pop())
    assert bases["codetulu2-7b"].startswith("results/evals/codellama-7b@")  # another base model, its own job
    # DPO's starting model is tulu2-7b's final model: one evaluation, tulu2-7b's (Δsft)
    assert paths.evaluations("tulu2-dpo-7b")["start"] == paths.evaluations("tulu2-7b")["final"]
    jobs = {m for name in TULU2_7B for m in paths.evaluations(name).values()}
    assert len(jobs) == 6  # Llama-2-7B, CodeLlama-7B and the four final models (before: 8, Llama-2-7B 3 times)


def test_suite_hash_follows_what_scores_and_nothing_else(raw):
    name = "tiny-platypus2"
    before = RecipePaths(validate_config(copy.deepcopy(raw))).suite_hash(name)

    def change(edit):
        return edited(raw, edit).suite_hash(name) != before

    def recipe_eval(**values):
        return lambda config: config["recipes"][name].setdefault("eval", {}).update(values)

    for scoring in (
        recipe_eval(batch_size=3),
        recipe_eval(seed=7),
        recipe_eval(dtype="bfloat16"),
        recipe_eval(backend="hf"),
        recipe_eval(suites=["tiny", "tulu2"]),
        lambda c: c["suites"]["tiny"][0].update(limit=7),  # a task's setting
        lambda c: c["datasets"]["tiny-eval"].update(count=99),  # the items it scores
        lambda c: c["recipes"][name].update(chat_format="tulu"),
    ):  # heldout_exact uses it
        assert change(scoring)
    for not_scoring in (
        recipe_eval(resources={"gpus": 0, "gpu_model": None, "mem_gb": 12, "runtime_min": 60}),
        recipe_eval(compare_base=False),
        recipe_eval(compare_start=False),
        recipe_eval(base_model="llama-2-7b"),
        lambda c: c["recipes"][name].update(description="edited"),
    ):
        assert not change(not_scoring)


def test_the_chat_format_counts_only_where_a_task_uses_it(paths, raw):
    # openllm-v1: every task is chat_format false, so the Alpaca format of platypus2-13b changes no score
    def tulu_format(config):
        config["recipes"]["platypus2-13b"]["chat_format"] = "tulu"

    assert edited(raw, tulu_format).suite_hash("platypus2-13b") == paths.suite_hash("platypus2-13b")
    # the tiny suite's heldout_exact wraps its prompts in the chat format: the Tulu and Alpaca twins score
    # SmolLM2 differently, so each keeps its own base evaluation; the Alpaca twins share theirs
    assert paths.evaluations("tiny-tulu2-dpo")["base"] != paths.evaluations("tiny-platypus2")["base"]
    assert paths.evaluations("tiny-platypus2-merged")["base"] == paths.evaluations("tiny-platypus2")["base"]


def test_an_evaluation_key_maps_back_to_its_model_and_a_recipe(paths):
    metrics = paths.evaluations("tulu2-dpo-7b")["base"]
    model_key, suite_hash = metrics.split("/")[2:4]
    model, recipe = paths.eval_job(model_key, suite_hash)
    assert model == "resources/models/llama-2-7b"
    assert recipe == "tulu2-7b"  # the first recipe in config order asking for it
    assert paths.eval_job_inputs(model_key, suite_hash) == {"model": model}
    tiny = paths.evaluations("tiny-platypus2")["final"].split("/")[2:4]
    assert paths.eval_job_inputs(*tiny) == {
        "model": "results/tiny-platypus2/sft_merged",
        "tiny-eval": "resources/datasets/tiny-eval.jsonl",
    }
    with pytest.raises(
        MenagerieError,
        match=r"^results/evals/nobody@00000000/0{16}: no recipe of the config "
        r"evaluates model key 'nobody@00000000'",
    ):
        paths.eval_job("nobody@00000000", "0" * 16)


def test_stage_records_point_at_the_shared_final_evaluation(paths):
    final = paths.evaluations("tulu2-7b")["final"]
    assert paths.stage_records("tulu2-7b")["evaluate.final"] == final.replace("metrics.json", "metrics.provenance.json")


def test_a_recipe_named_evals_is_refused(raw):
    config = copy.deepcopy(raw)
    config["recipes"]["evals"] = {"extends": "tiny-platypus2"}
    with pytest.raises(ConfigError, match=r"^recipe 'evals': the name 'evals' is reserved"):
        validate_config(config)


# ------------------------------------------------------------------------------------------- Snakemake


@pytest.mark.slow
def test_dry_run_of_the_tulu2_7b_recipes_evaluates_llama_2_7b_once(tmp_path, paths):
    from test_dryrun import parse_jobs, snakemake
    from workflow_copy import copy_workflow

    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "-n", "--cores", "1", *(f"results/{n}/eval.json" for n in TULU2_7B))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = parse_jobs(result.stdout + "\n" + result.stderr)
    evaluated = sorted(j["input"] for j in jobs if j["rule"] == "evaluate")
    assert evaluated == [
        "resources/models/codellama-7b",
        "resources/models/llama-2-7b",
        "results/codetulu2-7b/sft",
        "results/tulu2-7b/sft",
        "results/tulu2-dpo-7b/dpo",
        "results/tulu2-qlora-7b/sft_merged",
    ]
    llama = next(j["output"] for j in jobs if j["rule"] == "evaluate" and j["input"].endswith("llama-2-7b"))
    readers = sorted(j["wildcards"]["recipe"] for j in jobs if j["rule"] == "report" and llama in j["input"])
    assert readers == ["tulu2-7b", "tulu2-dpo-7b", "tulu2-qlora-7b"]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", result.stdout, re.MULTILINE))
    assert counts["evaluate"] == "6" and counts["report"] == "4"


TWIN = "tiny-platypus2"  # the first twin build
SECOND = "tiny-platypus2-merged"  # the second: same base model (SmolLM2-135M), same suite settings


def _snakemake(work: Path, *args: str) -> str:
    from workflow_copy import SNAKEMAKE

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [str(SNAKEMAKE), "--cores", "1", *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout + run.stderr


def _build(work: Path, *targets: str) -> None:
    """Every output of `targets` as after a real build, in seconds: placeholders recorded by `--touch`."""
    for line in _snakemake(work, "--summary", *targets).splitlines()[1:]:
        if "\t" not in line:
            continue
        path = work / line.split("\t")[0]
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    _snakemake(work, "--touch", *targets)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_second_twin_build_skips_the_base_evaluation(tmp_path, paths):
    """`make run` (tiny-tulu2-dpo, whose final model tiny-platypus2-merged merges into), then `make run
    RECIPE=tiny-platypus2`; a build of tiny-platypus2-merged then evaluates its own final model only."""
    from test_dryrun import parse_jobs
    from workflow_copy import copy_workflow

    work = copy_workflow(tmp_path / "wf")
    _build(work, "results/tiny-tulu2-dpo/eval.json", f"results/{TWIN}/eval.json")
    base = paths.evaluations(SECOND)["base"]
    assert base == paths.evaluations(TWIN)["base"] and (work / base).exists()
    jobs = parse_jobs(_snakemake(work, "-n", f"results/{SECOND}/eval.json"))
    evaluated = [(j["input"].split(", ")[0], j["output"]) for j in jobs if j["rule"] == "evaluate"]  # model first
    assert evaluated == [(f"results/{SECOND}/sft_merged", paths.evaluations(SECOND)["final"])]
    assert {j["rule"] for j in jobs} == {"merge", "evaluate", "report"}  # nothing of the first builds reruns
    report = next(j for j in jobs if j["rule"] == "report")
    assert base in report["input"].split(", ")  # eval.json reads the shared base evaluation
    # without the first build's evaluation the same dry run evaluates the base model too
    (work / base).unlink()
    again = parse_jobs(_snakemake(work, "-n", f"results/{SECOND}/eval.json"))
    assert sorted(j["output"] for j in again if j["rule"] == "evaluate") == sorted([base, evaluated[0][1]])


def test_the_report_script_links_the_evaluations_it_read(tmp_path, monkeypatch, paths):
    """scripts/evaluate.py report (as the report rule calls it): eval.json's `evaluations` hold the path and sha256
    of the shared metrics.json each role was read from."""
    import hashlib
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("menagerie_evaluate_cli", ROOT / "scripts/evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.chdir(tmp_path)
    resolved = tmp_path / "resolved.json"
    resolved.write_text(json.dumps(paths.config))
    evaluations = paths.evaluations("tiny-platypus2")
    for role, value in (("final", 60.0), ("base", 10.0)):
        metrics = {
            "recipe": "tiny-platypus2",
            "key": role,
            "model": "m",
            "backend": "hf",
            "dtype": "float32",
            "batch_size": 16,
            "seed": 1234,
            "chat_format": "alpaca",
            "chat_template_sha256": "0" * 64,
            "tasks": {
                "heldout_exact": {"status": "ok", "metric": "exact_match", "value": value, "stderr": 3.0, "n": 64}
            },
        }
        Path(evaluations[role]).parent.mkdir(parents=True)
        Path(evaluations[role]).write_text(json.dumps(metrics))
    cli.main(
        [
            "report",
            "--config",
            str(resolved),
            "--recipe",
            "tiny-platypus2",
            "--final",
            evaluations["final"],
            "--base",
            evaluations["base"],
            "--final-model",
            "results/tiny-platypus2/sft_merged",
            "--out",
            "results/tiny-platypus2/eval.json",
        ]
    )
    entry = json.loads(Path("results/tiny-platypus2/eval.json").read_text())
    assert entry["evaluations"] == {
        role: {"path": evaluations[role], "sha256": hashlib.sha256(Path(evaluations[role]).read_bytes()).hexdigest()}
        for role in ("final", "base")
    }
    assert entry["tasks"]["heldout_exact"]["delta_vs_base"] == pytest.approx(50.0)
