"""Snakemake end to end, in a throwaway copy of the workflow: the DAG of every published recipe (dry run), a
malformed user config, and a real run that stops at its first missing download. Offline; nothing is written to
the repository checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from workflow_copy import SNAKEMAKE, copy_workflow

from menagerie.config import load_config
from menagerie.workflow import RecipePaths

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

TIMEOUT = 300

# recipe -> (base model, rules run for the recipe itself, training stages, merge target model or None)
# (evaluate jobs carry no recipe: results/evals/<model key>/<suite hash>/, shared by the recipes that ask for it)
SFT = {"mixture", "contamination", "train", "report"}
ADAPTER = SFT | {"merge"}
MERGE_ONLY = {"merge", "report"}
PUBLISHED = {
    "tulu2-7b": ("llama-2-7b", SFT, ["sft"], None),
    "tulu2-13b": ("llama-2-13b", SFT, ["sft"], None),
    "tulu2-70b": ("llama-2-70b", SFT, ["sft"], None),
    "tulu2-dpo-7b": ("llama-2-7b", SFT, ["dpo"], None),  # DPO on tulu2-7b's SFT model (its train job)
    "tulu2-dpo-13b": ("llama-2-13b", SFT, ["dpo"], None),
    "tulu2-dpo-70b": ("llama-2-70b", SFT, ["dpo"], None),
    "tulu2-qlora-7b": ("llama-2-7b", ADAPTER, ["sft"], None),
    "tulu2-qlora-13b": ("llama-2-13b", ADAPTER, ["sft"], None),
    "tulu2-qlora-70b": ("llama-2-70b", ADAPTER, ["sft"], None),
    "codetulu2-7b": ("codellama-7b", SFT, ["sft"], None),
    "codetulu2-13b": ("codellama-13b", SFT, ["sft"], None),
    "codetulu2-34b": ("codellama-34b", SFT, ["sft"], None),
    "platypus2-13b": ("llama-2-13b", ADAPTER, ["sft"], None),
    "platypus2-70b": ("llama-2-70b", ADAPTER, ["sft"], None),
    "camel-platypus2-13b": ("llama-2-13b", MERGE_ONLY, [], "qcammel-13"),
    "stable-platypus2-13b": ("llama-2-13b", MERGE_ONLY, [], "stablebeluga-13b"),
    "openorca-platypus2-13b": ("llama-2-13b", MERGE_ONLY, [], "openorcaxopenchat-preview2-13b"),
    "birbal-7b": ("mistral-7b", ADAPTER, ["sft"], None),
    "birbal-7b-400k": ("mistral-7b", ADAPTER, ["sft"], None),
    "birbal-7b-700k": ("mistral-7b", ADAPTER, ["sft"], None),
    "birbal-7b-released": ("mistral-7b", ADAPTER, ["sft"], None),
}
assert len(PUBLISHED) == 21


def snakemake(
    workdir: Path, *args: str, hf_home: Path | None = None, timeout: int = TIMEOUT
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(hf_home or workdir / "hf-home"),
    }
    return subprocess.run(
        [str(SNAKEMAKE), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


def parse_jobs(output: str) -> list[dict]:
    """Job blocks of Snakemake's (dry-)run log: [{'rule': ..., 'output': ..., 'wildcards': {...}}, ...]."""
    jobs: list[dict] = []
    current: dict | None = None
    for line in output.splitlines():
        start = re.match(r"^(?:local)?rule (\w+):\s*$", line)
        if start:
            current = {"rule": start.group(1), "wildcards": {}}
            jobs.append(current)
            continue
        if current is None:
            continue
        field = re.match(r"^    (\w+): (.*)$", line)
        if not field:
            if line.strip() and not line.startswith(" "):
                current = None
            continue
        key, value = field.groups()
        if key == "wildcards":
            current["wildcards"] = dict(item.split("=", 1) for item in value.split(", "))
        else:
            current[key] = value
    return jobs


# ------------------------------------------------------------------------------------------- dry runs


@pytest.fixture(scope="module")
def paths() -> RecipePaths:
    return RecipePaths(load_config(ROOT / "config.yaml"))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, list[dict]]:
    workdir = copy_workflow(tmp_path_factory.mktemp("dryrun"))
    targets = [f"results/{name}/eval.json" for name in PUBLISHED]
    result = snakemake(workdir, "-n", "--cores", "1", *targets)
    return result, parse_jobs(result.stdout + "\n" + result.stderr)


def test_dry_run_of_every_published_recipe_succeeds(dry_run, paths):
    result, jobs = dry_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert jobs, result.stdout[-3000:]
    # one report per recipe and one evaluation per (model, suite settings), nothing twice
    reports = sorted(j["wildcards"]["recipe"] for j in jobs if j["rule"] == "report")
    assert reports == sorted(PUBLISHED)
    outputs = [j.get("output") for j in jobs]
    assert len(outputs) == len(set(outputs))
    evaluations = sorted(j["output"] for j in jobs if j["rule"] == "evaluate")
    asked = [m for name in PUBLISHED for m in paths.evaluations(name).values()]
    assert evaluations == sorted(set(asked)) and len(evaluations) < len(asked)
    # every job Snakemake counted was parsed
    total = re.search(r"^total\s+(\d+)\s*$", result.stdout, re.MULTILINE)
    assert total and int(total.group(1)) == len(jobs)


@pytest.mark.parametrize("recipe", sorted(PUBLISHED))
def test_dry_run_jobs_per_recipe(dry_run, paths, recipe):
    result, jobs = dry_run
    assert result.returncode == 0, result.stderr[-3000:]
    base, rules, stages, merge_into = PUBLISHED[recipe]
    own = [j for j in jobs if j["wildcards"].get("recipe") == recipe]
    assert {j["rule"] for j in own} == rules

    report = [j for j in own if j["rule"] == "report"]
    assert len(report) == 1 and report[0]["output"] == f"results/{recipe}/eval.json"
    # the report reads the shared evaluations of its final and base models (results/evals/<model key>/<suite hash>)
    evaluations = paths.evaluations(recipe)
    assert {"final", "base"} <= set(evaluations) and set(evaluations.values()) <= set(report[0]["input"].split(", "))
    by_output = {j["output"]: j for j in jobs if j["rule"] == "evaluate"}
    base_eval = by_output[evaluations["base"]]
    assert base_eval["input"] == f"resources/models/{base}"
    assert base_eval["output"].startswith(f"results/evals/{base}@")
    if "contamination" in rules:  # the gate asks SLURM for the GPU its MiniLM check runs on
        gate = next(j for j in own if j["rule"] == "contamination")
        assert "gres=gpu:1," in gate["resources"] and "runtime=240," in gate["resources"], gate["resources"]

    trains = sorted(j["wildcards"]["stage"] for j in own if j["rule"] == "train")
    assert trains == sorted(stages)
    mixtures = sorted(j["wildcards"]["part"] for j in own if j["rule"] == "mixture")
    assert mixtures == sorted(stages)

    model_outputs = {j["output"] for j in jobs if j["rule"] == "model"}
    assert f"resources/models/{base}" in model_outputs
    final_eval = by_output[evaluations["final"]]
    if "merge" in rules:
        merges = [j for j in own if j["rule"] == "merge"]
        assert [j["wildcards"]["stage"] for j in merges] == ["sft"]
        assert merges[0]["output"] == f"results/{recipe}/sft_merged"
        assert final_eval["input"] == f"results/{recipe}/sft_merged"
    else:
        assert final_eval["input"] == f"results/{recipe}/{stages[-1]}"
    if merge_into:
        # Platypus merges: the platypus2-13b adapter into another Llama-2-13B fine-tune
        assert f"resources/models/{merge_into}" in model_outputs
        merge = next(j for j in own if j["rule"] == "merge")
        assert merge["input"].split(", ") in (
            ["results/platypus2-13b/sft", f"resources/models/{merge_into}"],
            [f"resources/models/{merge_into}", "results/platypus2-13b/sft"],
        )
        assert any(j["rule"] == "train" and j["wildcards"] == {"recipe": "platypus2-13b", "stage": "sft"} for j in jobs)
    if "dpo" in stages:  # DPO starts from the SFT recipe's output: tulu2-dpo-<size> reads tulu2-<size>'s
        dpo = next(j for j in own if j["rule"] == "train" and j["wildcards"]["stage"] == "dpo")
        sft = recipe.replace("-dpo", "")
        assert f"results/{sft}/sft" in dpo["input"].split(", ")
        # Δsft: the SFT model is scored once, by the SFT recipe's own final evaluation
        assert evaluations["start"] == paths.evaluations(sft)["final"]


def test_birbal_ni_sampling_stage_in_the_dag(dry_run):
    """Birbal's NI sampling: one inference of Mistral-7B on the NI tasks feeds every NI dataset of the three mixes."""
    result, jobs = dry_run
    assert result.returncode == 0, result.stderr[-3000:]
    predicts = [j for j in jobs if j["rule"] == "ni_predict"]
    assert len(predicts) == 1
    assert sorted(predicts[0]["input"].split(", ")) == [
        "resources/datasets/natural-instructions.jsonl",
        "resources/models/mistral-7b",
    ]
    predictions = predicts[0]["output"].split(", ")[0]
    samples = {j["wildcards"]["dataset"]: j for j in jobs if j["rule"] == "ni_sample"}
    assert set(samples) == {
        f"ni-{kind}{size}" for kind in ("exact-match", "generation") for size in ("", "-400k", "-700k")
    }
    for name, job in samples.items():
        assert predictions in job["input"].split(", ")
        assert job["output"].split(", ")[0] == f"resources/datasets/{name}.jsonl"
    tasks = [j for j in jobs if j["rule"] == "dataset" and j["wildcards"]["dataset"] == "natural-instructions"]
    assert len(tasks) == 1
    for recipe, suffix in (("birbal-7b", ""), ("birbal-7b-400k", "-400k"), ("birbal-7b-700k", "-700k")):
        mixture = next(j for j in jobs if j["rule"] == "mixture" and j["wildcards"]["recipe"] == recipe)
        assert {
            f"resources/datasets/ni-exact-match{suffix}.jsonl",
            f"resources/datasets/ni-generation{suffix}.jsonl",
        } <= set(mixture["input"].split(", "))


def test_tiny_birbal_runs_ni_sampling_on_its_own_model(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "-n", "--cores", "1", "results/tiny-birbal/eval.json", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = parse_jobs(result.stdout + "\n" + result.stderr)
    predict = next(j for j in jobs if j["rule"] == "ni_predict")
    assert sorted(predict["input"].split(", ")) == [
        "resources/datasets/tiny-ni-tasks.jsonl",
        "resources/models/smollm2-135m",
    ]
    assert {j["wildcards"]["dataset"] for j in jobs if j["rule"] == "ni_sample"} == {
        "tiny-ni-exact-match",
        "tiny-ni-generation",
    }
    mixture = next(j for j in jobs if j["rule"] == "mixture")
    assert "resources/datasets/tiny-ni-generation.jsonl" in mixture["input"].split(", ")


def test_default_twin_trains_fully_with_no_merge(tmp_path):
    """`make run`'s target, tiny-tulu2-dpo, takes Tulu 2's full fine-tuning path: SFT -> DPO -> evaluate, no merge
    job; DPO reads the SFT stage's own directory, the evaluations the DPO (final) and SFT (start) directories."""
    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "-n", "--cores", "1", timeout=120)  # the default target (config `recipe:`)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = parse_jobs(result.stdout + "\n" + result.stderr)
    assert jobs and not [j for j in jobs if j["rule"] == "merge"]
    own = [j for j in jobs if j["wildcards"].get("recipe") == "tiny-tulu2-dpo"]
    trains = {j["wildcards"]["stage"]: j for j in own if j["rule"] == "train"}
    assert sorted(trains) == ["dpo", "sft"]
    assert "resources/models/smollm2-135m" in trains["sft"]["input"].split(", ")
    assert "results/tiny-tulu2-dpo/sft" in trains["dpo"]["input"].split(", ")
    evaluated = sorted(j["input"].split(", ")[0] for j in jobs if j["rule"] == "evaluate")  # the model comes first
    assert evaluated == ["resources/models/smollm2-135m", "results/tiny-tulu2-dpo/dpo", "results/tiny-tulu2-dpo/sft"]


def test_malformed_user_config_is_one_sentence(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "my.yaml").write_text(
        "recipes:\n  my-recipe:\n    extends: tulu2-7b\n    stages: {sft: {lerning_rate: 1}}\n"
    )
    # targets before --configfile, which takes several values
    result = snakemake(
        workdir, "results/my-recipe/eval.json", "-n", "--cores", "1", "--configfile", "my.yaml", timeout=120
    )
    assert result.returncode != 0
    assert "error: recipe 'my-recipe'" in result.stderr
    assert "unknown key 'lerning_rate'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "stages.sft" in error_lines[0]


def test_dry_run_refuses_a_stage_that_cannot_fit(tmp_path):
    """The planner's check at workflow start: tulu2-70b's full SFT planted on one 80 GB GPU under DDP."""
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "planted.yaml").write_text(
        "recipes:\n"
        "  tulu2-70b:\n"
        "    stages: {sft: {strategy: ddp, resources: {nodes: 1, gpus: 1, gpu_model: a100_80gb}}}\n"
    )
    result = snakemake(
        workdir, "results/tulu2-70b/eval.json", "-n", "--cores", "1", "--configfile", "planted.yaml", timeout=120
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr[-2000:]
    assert error_lines[0].startswith("error: recipe 'tulu2-70b': stage sft needs an estimated ")
    assert "under ddp" in error_lines[0] and "declares 1 x a100_80gb with 80.0 GiB each" in error_lines[0]


# ------------------------------------------------------------------------------------------- a real run


def test_real_recipe_stops_at_its_missing_downloads(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    hf_home = tmp_path / "empty-hf-home"  # guaranteed empty cache: nothing can be found offline
    hf_home.mkdir()
    result = snakemake(workdir, "--cores", "1", "--keep-going", "results/tulu2-7b/eval.json", hf_home=hf_home)
    output = result.stdout + result.stderr
    assert result.returncode != 0

    model_errors = [
        line for line in result.stderr.splitlines() if line.startswith("error:") and "meta-llama/Llama-2-7b-hf" in line
    ]
    data_errors = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("error:") and "allenai/tulu-v2-sft-mixture" in line
    ]
    assert model_errors and data_errors, output[-4000:]
    # one sentence each: what is missing and how to provide it
    assert "model 'llama-2-7b'" in model_errors[0]
    assert "download" in model_errors[0] and "source: local" in model_errors[0]
    assert "dataset 'tulu-v2-sft-mixture'" in data_errors[0]
    assert "download" in data_errors[0] and "source: local" in data_errors[0]
    assert "Traceback" not in (workdir / "logs/model/llama-2-7b.log").read_text()
    assert "Traceback" not in (workdir / "logs/dataset/tulu-v2-sft-mixture.log").read_text()

    # nothing downstream ran, and nothing partial was left behind
    assert not (workdir / "resources/models/llama-2-7b").exists()
    assert not (workdir / "resources/datasets/tulu-v2-sft-mixture.jsonl").exists()
    leftovers = [
        p for d in ("resources/models", "resources/datasets") if (workdir / d).exists() for p in (workdir / d).iterdir()
    ]
    assert leftovers == []
    assert not (workdir / "results").exists() or not any((workdir / "results").rglob("*"))


def test_birbal_ni_sampling_stops_at_its_missing_inputs(tmp_path):
    """Without Mistral-7B and the NI task files, the NI sampling stops at the first jobs that need them, each with
    one sentence saying what is missing and how to provide it, and leaves nothing behind."""
    workdir = copy_workflow(tmp_path / "wf")
    hf_home = tmp_path / "empty-hf-home"
    hf_home.mkdir()
    result = snakemake(
        workdir, "--cores", "1", "--keep-going", "resources/datasets/ni-exact-match.jsonl", hf_home=hf_home
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    model = [e for e in errors if "model 'mistral-7b'" in e]
    tasks = [e for e in errors if "dataset 'natural-instructions'" in e]
    assert model and tasks, result.stderr[-4000:]
    assert "download" in model[0] and "source: local" in model[0]
    assert "does not exist" in tasks[0] and "datasets.natural-instructions.path" in tasks[0]
    assert "Traceback" not in (workdir / "logs/dataset/natural-instructions.log").read_text()
    assert not list((workdir / "resources").rglob("*.jsonl")) and not (workdir / "resources/ni").exists()
