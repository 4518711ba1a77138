"""menagerie.jobs: what rules/*.smk hand to Snakemake, unit-tested without running Snakemake (the dry runs of
tests/test_dryrun.py and test_rule_hashes.py run them inside real Snakemake). Wildcards and input lists are
Snakemake's own classes; the config is the shipped one."""

from __future__ import annotations

import copy
import io
import json
import re
import time
from pathlib import Path

import pytest
from snakemake.iocontainers import InputFiles, Wildcards
from snakemake.settings.types import DeploymentMethod, DeploymentSettings

from menagerie import jobs
from menagerie.config import load_config, load_yaml, recipe_hash
from menagerie.errors import ConfigError
from menagerie.provenance import GIT_COMMIT_ENV
from menagerie.train.budget import append_ledger
from menagerie.workflow import RecipePaths
from recipes import CONFIG_PATH, ROOT

RULE_FILES = sorted((ROOT / "rules").glob("*.smk")) + [ROOT / "Snakefile"]


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(CONFIG_PATH)


@pytest.fixture(scope="module")
def J(config) -> jobs.Jobs:
    return jobs.Jobs(config, python="py", cores=4)


def w(**values) -> Wildcards:
    return Wildcards(fromdict=values)


# ---- the rule files declare; the logic is here


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_files_hold_rules_and_names_only(path):
    text = path.read_text()
    assert not re.search(r"^\s*def |\blambda\b", text, flags=re.M), f"{path.name}: a function belongs in menagerie"
    assert "sys.argv" not in text.replace("note_unpinned_hub_datasets(CONFIG, sys.argv)", "")
    assert not re.search(r"\b(glob|open|exists|os\.replace)\(", text), f"{path.name}: reads or writes files"
    imports = re.findall(r"^(?:from \S+ )?import .*$", text, flags=re.M)
    allowed = {"import sys", "from snakemake.utils import min_version", "from menagerie.jobs import ("}
    assert all(line in allowed or line.startswith("from menagerie.jobs import") for line in imports), imports


# ---- parse time


def test_a_bad_config_is_one_error_line_and_exit_1(config):
    raw = {**load_yaml(CONFIG_PATH), "recipe": "no-such-recipe"}
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        jobs.config_or_exit(raw, stderr=err)
    assert exc.value.code == 1
    assert err.getvalue().startswith("error: ") and "no-such-recipe" in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_a_good_config_comes_back_validated(config):
    assert jobs.config_or_exit(load_yaml(CONFIG_PATH)) == config


def test_resolved_config_is_written_once_per_content(config, tmp_path):
    first = jobs.write_resolved_config(config, tmp_path)
    assert json.loads(Path(first).read_text()) == json.loads(json.dumps(config))
    mtime = Path(first).stat().st_mtime_ns
    time.sleep(0.01)
    assert jobs.write_resolved_config(copy.deepcopy(config), tmp_path) == first
    assert Path(first).stat().st_mtime_ns == mtime  # not rewritten
    other = jobs.write_resolved_config({**config, "recipe": "tiny-birbal"}, tmp_path)
    assert other != first and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [Path(first).name, Path(other).name]
    )  # no temporary file left behind


def test_git_commit_is_asked_once_and_an_outer_value_kept():
    env = {}
    commit = jobs.export_git_commit(ROOT, env)
    assert env[GIT_COMMIT_ENV] == commit and re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", commit)
    assert jobs.export_git_commit(ROOT, {GIT_COMMIT_ENV: "outer"}) == "outer"


def test_interpreter_in_and_out_of_an_image():
    assert jobs.uses_apptainer(DeploymentSettings(deployment_method={DeploymentMethod.APPTAINER}))
    assert not jobs.uses_apptainer(DeploymentSettings(deployment_method={DeploymentMethod.CONDA}))
    assert not jobs.uses_apptainer(DeploymentSettings())
    assert jobs.python_command(True, "/x y/python") == "python"
    assert jobs.python_command(False, "/x y/python") == "'/x y/python'"


def test_one_of_matches_exactly_the_names():
    pattern = jobs.one_of(["a.b", "c"])
    assert re.fullmatch(pattern, "a.b") and re.fullmatch(pattern, "c")
    assert not re.fullmatch(pattern, "axb") and not re.fullmatch(pattern, "")
    assert not re.fullmatch(jobs.one_of([]), "") and not re.fullmatch(jobs.one_of([]), "x")


def test_requested_recipes_come_from_the_targets_else_the_default(config):
    assert jobs.requested_recipes(
        config, ["--cores", "2", "results/birbal-7b/eval.json", "results/platypus2-13b/data/sft.jsonl"]
    ) == ["birbal-7b", "platypus2-13b"]
    assert jobs.requested_recipes(config, ["results/no-such/eval.json", "results/leaderboard.json"]) == [
        config["recipe"]
    ]


def test_unpinned_hub_datasets_are_noted_for_the_recipes_that_read_them(config):
    unpinned = sorted(n for n, e in config["datasets"].items() if e.get("source") == "hub" and not e.get("revision"))
    assert unpinned, "the shipped config has an unpinned hub dataset (QuAC)"
    notes = jobs.unpinned_notes(config, ["birbal-7b"])
    read = RecipePaths(config).datasets_read("birbal-7b")
    assert len(notes) == len([n for n in unpinned if n in read]) > 0
    assert all(line.startswith("note: ") for line in notes) and any("quac" in line for line in notes)
    assert jobs.unpinned_notes(config, ["tiny-tulu2-dpo"]) == []
    err = io.StringIO()
    jobs.note_unpinned_hub_datasets(config, ["snakemake", "-n", "results/birbal-7b/eval.json"], stderr=err)
    assert err.getvalue().splitlines() == notes


# ---- per-job functions


def test_rule_and_entry_hashes_follow_what_they_read(config, J):
    paths = RecipePaths(config)
    assert J.rule_hash("train")(w(recipe="tiny-tulu2-dpo", stage="dpo")) == paths.rule_hash(
        "train", "tiny-tulu2-dpo", stage="dpo"
    )
    assert J.rule_hash("contamination")(w(recipe="tiny-birbal")) == paths.rule_hash("contamination", "tiny-birbal")
    assert J.recipe_hash(w(recipe="tiny-birbal")) == recipe_hash(config, "tiny-birbal")
    edited = copy.deepcopy(config)
    edited["datasets"]["tiny-eval"]["note"] = "edited"
    before = jobs.Jobs(config).entry_hash("datasets", "dataset")
    after = jobs.Jobs(edited).entry_hash("datasets", "dataset")
    assert before(w(dataset="tiny-eval")) != after(w(dataset="tiny-eval"))
    assert before(w(dataset="tiny-prefs")) == after(w(dataset="tiny-prefs"))
    assert re.fullmatch(r"[0-9a-f]{16}", before(w(dataset="tiny-prefs")))


def test_stage_resources_come_from_the_recipe_else_the_defaults(config, J):
    assert (
        J.stage_resources("eval")(w(recipe="platypus2-13b")) == config["recipes"]["platypus2-13b"]["eval"]["resources"]
    )
    stage = J.stage_resources(jobs.STAGE_WILDCARD)
    assert (
        stage(w(recipe="tiny-tulu2-dpo", stage="dpo"))
        == config["recipes"]["tiny-tulu2-dpo"]["stages"]["dpo"]["resources"]
    )
    assert stage.stage_name(w(recipe="tiny-tulu2-dpo", stage="dpo")) == "dpo"
    bare = copy.deepcopy(config)
    bare["recipes"]["tiny-birbal"]["stages"]["merge"]["resources"] = {}
    assert jobs.Jobs(bare).stage_resources("merge")(w(recipe="tiny-birbal")) == jobs.default_resources()
    assert jobs.default_resources()["gpus"] == 0


def test_threads_are_a_gpu_nodes_cpus_else_the_cores(config):
    asked = []
    j = jobs.Jobs(config, cores=lambda: asked.append(1) or 16)
    threads = j.threads("eval")
    assert asked == []  # the cores are asked per job, not at parse time
    gpu = config["recipes"]["platypus2-13b"]["eval"]["resources"]
    assert threads(w(recipe="platypus2-13b")) == min(gpu["gpus"] * gpu["cpus_per_gpu"], 16)
    assert threads(w(recipe="tiny-birbal")) == 16 and asked


def test_slurm_runtime_grows_with_the_attempt_and_stops_at_the_budget(config, tmp_path):
    j = jobs.Jobs(config, root=tmp_path)
    slurm = j.slurm("sft")
    declared = config["recipes"]["tiny-birbal"]["stages"]["sft"]["resources"]
    wc = w(recipe="tiny-birbal", stage="sft")
    assert slurm["mem_mb"](wc, attempt=2) == 2 * int(declared["mem_gb"] * 1024)
    assert slurm["runtime"](wc, attempt=3) == 3 * declared["runtime_min"]  # the 3-hour wall budget is unused
    start = time.time() - 2.9 * 3600  # 2.9 of tiny-birbal's 3 wall hours spent
    for event, at in (("start", start), ("end", start + 2.9 * 3600)):
        append_ledger(
            tmp_path / "results/tiny-birbal", {"attempt": "sft-a", "stage": "sft", "gpus": 0, "event": event, "at": at}
        )
    assert slurm["runtime"](wc, attempt=3) == declared["runtime_min"]  # capped, never below the declared runtime
    ni = j.slurm(lambda wildcards: jobs.default_resources())  # a lookup, not a recipe stage: never capped
    assert ni["runtime"](w(key="k"), attempt=2) == 2 * jobs.default_resources()["runtime_min"]


def test_model_resources_grow_per_attempt(J):
    resources = J.model_resources()
    assert resources["mem_mb"](w(model="m"), attempt=2) == 2 * jobs.MODEL_RESOURCES["mem_mb"]
    assert resources["runtime"](w(model="m")) == jobs.MODEL_RESOURCES["runtime"]


def test_launcher_starts_one_process_per_gpu(config, J, monkeypatch):
    monkeypatch.delenv("MENAGERIE_NPROC", raising=False)
    assert J.launcher(jobs.STAGE_WILDCARD)(w(recipe="tiny-tulu2-dpo", stage="sft")) == "py"
    gpus = config["recipes"]["tulu2-7b"]["stages"]["sft"]["resources"]["gpus"]
    assert gpus > 1
    line = J.launcher(jobs.STAGE_WILDCARD)(w(recipe="tulu2-7b", stage="sft"))
    assert line.startswith("py -m torch.distributed.run") and f"--nproc_per_node={gpus}" in line


def test_a_multi_node_stage_under_apptainer_is_refused_in_one_sentence(config):
    nodes = config["recipes"]["tulu2-70b"]["stages"]["sft"]["resources"]["nodes"]
    assert nodes > 1
    plain = jobs.Jobs(config, python="py").launcher(jobs.STAGE_WILDCARD)(w(recipe="tulu2-70b", stage="sft"))
    assert plain.startswith("srun ")
    boxed = jobs.Jobs(config, python="python", apptainer=True)
    # one node is fine inside the image; several are refused, naming the key and the way that works
    assert boxed.launcher(jobs.STAGE_WILDCARD)(w(recipe="tulu2-7b", stage="sft")).startswith("python -m torch")
    with pytest.raises(ConfigError) as err:
        boxed.launcher(jobs.STAGE_WILDCARD)(w(recipe="tulu2-70b", stage="sft"))
    message = str(err.value)
    assert message.startswith(f"recipes.tulu2-70b.stages.sft.resources.nodes is {nodes}:")
    assert "profiles/slurm " in message and "\n" not in message


def test_parse_time_check_refuses_a_multi_node_recipe_under_apptainer_only(config):
    err = io.StringIO()
    with pytest.raises(SystemExit) as stop:
        jobs.exit_if_multi_node_in_images(config, True, ["snakemake", "results/tulu2-70b/eval.json"], stderr=err)
    assert stop.value.code == 1
    assert err.getvalue().startswith("error: recipes.tulu2-70b.stages.sft.resources.nodes is ")
    assert err.getvalue().count("\n") == 1
    # the same target without images, or a one-node recipe in images, passes
    jobs.exit_if_multi_node_in_images(config, False, ["snakemake", "results/tulu2-70b/eval.json"])
    jobs.exit_if_multi_node_in_images(config, True, ["snakemake", "results/tulu2-7b/eval.json"])


def test_run_stage_logs_and_surfaces_the_last_line(J):
    assert (
        J.run_stage("scripts/x.py --a {wildcards.b}")
        == "py scripts/x.py --a {wildcards.b} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}"
    )
    assert J.run_stage("scripts/t.py", launcher="{params.launch}").startswith("{params.launch} scripts/t.py > {log}")


def test_local_dataset_is_an_input_once_it_exists(config, tmp_path):
    local = copy.deepcopy(config)
    local["datasets"]["mine"] = {"source": "local", "path": "data/mine.jsonl", "schema": "tulu"}
    j = jobs.Jobs(local, root=tmp_path)
    assert j.local_dataset_file(w(dataset="mine")) == []
    (tmp_path / "data").mkdir()
    (tmp_path / "data/mine.jsonl").write_text("{}\n")
    assert j.local_dataset_file(w(dataset="mine")) == ["data/mine.jsonl"]
    assert j.local_dataset_file(w(dataset="tiny-eval")) == []  # generated: no input file


def test_ni_predictions_job_inputs_and_resources(config, tmp_path):
    j = jobs.Jobs(config, root=tmp_path)
    dataset = "tiny-ni-exact-match"
    key = Path(j.paths.ni_predictions(dataset)).parent.name
    wc = w(key=key)
    assert j.ni_dataset(wc) in j.paths.ni_datasets()
    entry = config["datasets"][j.ni_dataset(wc)]
    inputs = j.ni_predict_inputs(wc)
    assert inputs["model"] == f"resources/models/{entry['model']}"
    task_list = entry["ni"]["selection"]["task_list"]
    if task_list:
        assert "task_list" not in inputs
        (tmp_path / task_list).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / task_list).write_text("task1\n")
        assert j.ni_predict_inputs(wc)["task_list"] == task_list
    assert j.ni_inference_resources(wc) == entry["ni"]["inference"]["resources"]
    assert j.ni_sample_inputs(w(dataset=dataset)) == {
        "tasks": f"resources/datasets/{entry['tasks']}.jsonl",
        "predictions": f"resources/ni/{key}/predictions.jsonl",
    }


def test_name_path_arguments_match_the_inputs(J):
    wc = w(recipe="tiny-tulu2-dpo", part="dpo")
    raw = J.mixture_raw_arg(wc).split()
    assert raw == [f"{k}={v}" for k, v in J.mixture_inputs(wc).items()] and raw
    gate = J.contamination_inputs_arg(w(recipe="tiny-tulu2-dpo")).split()
    assert [a.split("=", 1)[1] for a in gate] == J.contamination_inputs(w(recipe="tiny-tulu2-dpo"))
    assert {"sft", "dpo"} <= {a.split("=", 1)[0] for a in gate}
    stages = dict(a.split("=", 1) for a in J.stage_records_arg(w(recipe="tiny-tulu2-dpo")).split())
    assert stages["evaluate.final"] == J.final_evaluation(w(recipe="tiny-tulu2-dpo")).replace(
        "metrics.json", "metrics.provenance.json"
    )


def test_evaluate_job_inputs_and_resources(config, J):
    recipe = "tiny-tulu2-dpo"
    base = J.paths.evaluations(recipe)["base"]
    model_key, suite_hash = base.split("/")[2:4]
    wc = w(model_key=model_key, suite_hash=suite_hash)
    assert J.evaluate_inputs(wc) == {
        "model": "resources/models/smollm2-135m",
        "tiny-eval": "resources/datasets/tiny-eval.jsonl",
    }
    assert J.eval_data_arg(wc) == "tiny-eval=resources/datasets/tiny-eval.jsonl"
    first = J.paths.eval_job(model_key, suite_hash)[1]  # the first recipe asking for it sizes the job
    assert J.eval_job_resources(wc) == config["recipes"][first]["eval"]["resources"]
    final = J.paths.evaluations(recipe)["final"].split("/")
    assert J.evaluate_inputs(w(model_key=final[2], suite_hash=final[3]))["model"] == J.paths.final_model(recipe)
    # a job whose resources come from a lookup, not a recipe's stage: SLURM keys without the budget cap
    assert J.slurm(J.eval_job_resources)["runtime"](wc, attempt=2) == 2 * J.eval_job_resources(wc)["runtime_min"]


def test_report_inputs_and_their_arguments(config, J):
    inputs = J.report_inputs(w(recipe="tiny-tulu2-dpo"))
    assert list(inputs) == ["final", "base", "start"] and inputs == J.paths.evaluations("tiny-tulu2-dpo")
    assert all(p.startswith("results/evals/") and p.endswith("/metrics.json") for p in inputs.values())
    # DPO on another recipe's SFT model: its start is that recipe's own final evaluation (evaluated once)
    assert J.report_inputs(w(recipe="tulu2-dpo-7b"))["start"] == J.final_evaluation(w(recipe="tulu2-7b"))
    no_base = copy.deepcopy(config)
    no_base["recipes"]["tiny-birbal"]["eval"]["compare_base"] = False
    assert "base" not in jobs.Jobs(no_base).report_inputs(w(recipe="tiny-birbal"))
    wc = w(recipe="tiny-tulu2-dpo")
    full = InputFiles(fromdict=inputs)
    assert J.report_base_arg(wc, full) == f"--base {inputs['base']}"
    assert J.report_start_arg(wc, full) == (
        f"--start {inputs['start']} --start-model {J.paths.stage_model('tiny-tulu2-dpo', 'sft')}"
    )
    final_only = InputFiles(fromdict={"final": "f.json"})
    assert J.report_base_arg(wc, final_only) == "" and J.report_start_arg(wc, final_only) == ""


def test_openllm_v1_recipes_and_recipe_outputs(config, J):
    v1 = J.openllm_v1_recipes()
    assert "platypus2-13b" in v1 and not any(n.startswith("tiny-") for n in v1)
    assert v1 == sorted(n for n in config["recipes"] if n in v1)
    assert J.recipe_outputs("platypus2-13b")[-1] == "results/platypus2-13b/openllm_v1/results.json"
    evaluations = J.paths.evaluations("tiny-tulu2-dpo")
    assert J.recipe_outputs("tiny-tulu2-dpo") == ["results/tiny-tulu2-dpo/eval.json"] + [
        evaluations[role].replace("/metrics.json", "/lm_eval") for role in ("final", "base", "start")
    ]
    assert J.final_evaluation(w(recipe="tulu2-7b")).replace("metrics.json", "lm_eval") in J.recipe_outputs(
        "tulu2-dpo-7b"
    )


def test_leaderboard_reads_every_built_eval_json_and_the_configured_recipe(config, tmp_path):
    j = jobs.Jobs(config, root=tmp_path)
    assert j.leaderboard_inputs(w()) == [f"results/{config['recipe']}/eval.json"]
    for name in ("b-recipe", "a-recipe"):
        (tmp_path / "results" / name).mkdir(parents=True)
        (tmp_path / "results" / name / "eval.json").write_text("{}")
    (tmp_path / "results/not-built").mkdir()
    assert j.leaderboard_inputs(w()) == sorted(
        ["results/a-recipe/eval.json", "results/b-recipe/eval.json", f"results/{config['recipe']}/eval.json"]
    )
    v1 = {**config, "recipe": "platypus2-13b"}
    assert jobs.Jobs(v1).leaderboard_openllm_v1(w()) == ["results/platypus2-13b/openllm_v1/results.json"]
    assert j.leaderboard_openllm_v1(w()) == j.openllm_v1_outputs(config["recipe"])


def test_merge_inputs_and_dtype(J):
    wc = w(recipe="tiny-platypus2", stage="sft")
    assert J.merge_inputs(wc) == J.paths.merge_inputs("tiny-platypus2", "sft")
    assert J.merge_inputs(wc)["adapter"] == "results/tiny-platypus2/sft"
    assert J.merge_dtype(wc) == "float32"
    assert J.train_model(w(recipe="tiny-tulu2-dpo", stage="dpo")) == J.paths.stage_model("tiny-tulu2-dpo", "sft")
