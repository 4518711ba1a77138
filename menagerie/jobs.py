"""What rules/*.smk declare, as functions: each rule's inputs, params, threads, resources and shell command, from the
resolved config and a job's wildcards, plus what the workflow does once when Snakemake parses it (validate the config,
dump it, record the git commit, note unpinned hub datasets). The .smk files hold rules and names only
(tests/test_jobs.py checks that too); the paths themselves are menagerie.workflow.RecipePaths.

Functions a rule hands to Snakemake take the job's `wildcards` (Snakemake's Wildcards: attribute access and items())
and, where they need them, `input` or `attempt`, by those names: Snakemake passes arguments by name.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from menagerie.cli_support import name_path_words
from menagerie.config import config_schema, fill_defaults, recipe_hash, validate_config
from menagerie.data.sources import unpinned_revision_problem
from menagerie.errors import ConfigError
from menagerie.plan import check_plan
from menagerie.provenance import GIT_COMMIT_ENV, host_git_commit
from menagerie.resources import SLURM_KEYS, job_threads, max_job_runtime, slurm_resources
from menagerie.train import launch
from menagerie.train.budget import cap_runtime
from menagerie.workflow import RecipePaths, dataset_file, settings_hash

STAGE_WILDCARD = "{stage}"  # stage_resources(STAGE_WILDCARD): the stage named by the job's `stage` wildcard
RESOLVED_CONFIG_DIR = "resources/config"
# the `model` rule (convert or link a base model): memory and minutes of its first attempt, grown with each retry
MODEL_RESOURCES = {"mem_mb": 8192, "runtime": 60}


# ---- once, when Snakemake parses the workflow


def config_or_exit(raw: dict, stderr: TextIO | None = None) -> dict:
    """The resolved config (defaults filled, references checked) whose every stage fits its declared GPUs and host
    memory (menagerie.plan); a user error is one `error:` line and exit status 1, never a traceback."""
    try:
        config = validate_config(raw)
        check_plan(config)
    except ConfigError as exc:
        (stderr or sys.stderr).write(f"error: {exc}\n")
        raise SystemExit(1) from None
    return config


def write_resolved_config(config: dict, directory: str | Path = RESOLVED_CONFIG_DIR) -> str:
    """Dump the resolved config once, content-addressed (<directory>/<sha256[:16]>.json, written atomically); stage
    scripts read it through {RESOLVED_CONFIG} in their shell command. Deliberately not a param: its path changes with
    every config edit, so every rule would rerun whenever any recipe changed; rules carry the hash of what they read
    instead (Jobs.rule_hash, Jobs.entry_hash). Returns the path."""
    text = json.dumps(config, sort_keys=True, indent=1)
    path = Path(directory) / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path)


def export_git_commit(root: str | Path, environ: MutableMapping[str, str] | None = None) -> str:
    """The commit (and dirty state) the run starts from, asked of git once on the host and put in the environment:
    SLURM jobs (--export=ALL) and Apptainer images inherit it, so stages record it without git
    (menagerie.provenance.git_commit). A value already set (an outer run's) is kept."""
    environ = os.environ if environ is None else environ
    if GIT_COMMIT_ENV not in environ:
        environ[GIT_COMMIT_ENV] = host_git_commit(Path(root))
    return environ[GIT_COMMIT_ENV]


def uses_apptainer(deployment_settings: Any) -> bool:
    """Whether Snakemake runs the jobs in Apptainer images (`--sdm apptainer`)."""
    try:
        from snakemake.settings.types import DeploymentMethod
    except ImportError:
        return False
    return DeploymentMethod.APPTAINER in (getattr(deployment_settings, "deployment_method", None) or ())


def python_command(apptainer: bool, executable: str = sys.executable) -> str:
    """The interpreter stage scripts run with: the one Snakemake runs in; inside an image its own `python` (the image
    holds the locked environment only; the code is the bound working directory, which scripts/*.py put on sys.path
    themselves). Shell words: the train launcher splits them (menagerie.train.launch.interpreter) before quoting, so
    the host interpreter's path is quoted."""
    return "python" if apptainer else shlex.quote(executable)


def default_resources() -> dict:
    """The `resources:` block of a stage that declares none (the schema's defaults)."""
    schema = config_schema()
    return fill_defaults({}, schema["$defs"]["resources"], schema)


def one_of(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly `names` (none: a pattern that matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def requested_recipes(config: dict, targets: Sequence[str]) -> list[str]:
    """The recipes the command line's targets build (results/<recipe>/...), else the default recipe."""
    named = {t.split("/")[1] for t in targets if t.startswith("results/") and t.count("/") >= 2}
    default = config.get("recipe")
    return sorted(r for r in named if r in config["recipes"]) or (
        [default] if isinstance(default, str) and default in config["recipes"] else []
    )


def unpinned_notes(config: dict, recipes: Iterable[str]) -> list[str]:
    """One `note:` line per unpinned hub dataset the recipes' builds read (their dataset stage stops until
    `revision:` is set)."""
    paths = RecipePaths(config)
    names = dict.fromkeys(d for r in recipes for d in paths.datasets_read(r))
    return [
        f"note: {problem}" for name in names if (problem := unpinned_revision_problem(name, config["datasets"][name]))
    ]


def multi_node_in_image(recipe: str, stage: str, nodes: int) -> str:
    """Why a multi-node stage cannot run under --sdm apptainer: the job's command runs inside `apptainer exec`,
    whose image has no srun/scontrol to start the other nodes' torchrun agents (it would hang at the rendezvous)."""
    return (
        f"recipes.{recipe}.stages.{stage}.resources.nodes is {nodes}: a multi-node training job cannot start under "
        "--sdm apptainer (profiles/slurm-apptainer), whose images have no srun; run it with profiles/slurm and the "
        "locked environment (make env EXTRA=cuda)"
    )


def exit_if_multi_node_in_images(
    config: dict, apptainer: bool, argv: Sequence[str] | None = None, stderr: TextIO | None = None
) -> None:
    """At parse time, before anything is submitted: under --sdm apptainer, a recipe the command line asks for whose
    training stage spans several nodes is one `error:` line and exit status 1."""
    if not apptainer:
        return
    argv = sys.argv if argv is None else argv
    for recipe in requested_recipes(config, argv[1:]):
        for stage, block in config["recipes"][recipe].get("stages", {}).items():
            nodes = launch.node_count((block or {}).get("resources"))
            if stage in ("sft", "dpo") and nodes > 1:
                (stderr or sys.stderr).write(f"error: {multi_node_in_image(recipe, stage, nodes)}\n")
                raise SystemExit(1)


def note_unpinned_hub_datasets(config: dict, argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> None:
    """Print unpinned_notes for the recipes the command line asks for (dry runs included). Snakemake knows its
    targets only after parsing, hence the command line (`argv`, default sys.argv)."""
    argv = sys.argv if argv is None else argv
    for line in unpinned_notes(config, requested_recipes(config, argv[1:])):
        (stderr or sys.stderr).write(line + "\n")


def per_attempt(base: int) -> Callable[..., int]:
    """A resource that grows with the retry attempt: base, 2 x base, ..."""

    def value(wildcards, attempt=1):
        return base * attempt

    return value


# ---- per job


class StageResources:
    """A stage's `resources:` block for a job: the recipe's stage (its `stages:` entry, or `eval` / `contamination`),
    else the schema's defaults. `stage` is a stage name or STAGE_WILDCARD (the job's `stage` wildcard)."""

    def __init__(self, config: dict, stage: str, defaults: dict):
        self.config, self.stage, self.defaults = config, stage, defaults

    def stage_name(self, wildcards) -> str:
        return wildcards.stage if self.stage == STAGE_WILDCARD else self.stage

    def __call__(self, wildcards) -> dict:
        recipe = self.config["recipes"][wildcards.recipe]
        stage = self.stage_name(wildcards)
        if stage in ("eval", "contamination"):
            settings = recipe[stage]
        else:
            settings = recipe["stages"].get(stage) or {}
        return settings.get("resources") or self.defaults


class Jobs:
    """The functions rules/*.smk hand to Snakemake, for one resolved config. `python` is the interpreter words stage
    scripts run with (python_command); `cores` gives workflow.cores when a job's threads are asked (Snakemake knows
    them then; a dry run without --cores never asks); `root` is the directory results/ lives in."""

    def __init__(
        self,
        config: dict,
        python: str = "python",
        cores: Callable[[], int] | int = 1,
        root: str | Path = ".",
        apptainer: bool = False,
    ):
        self.config = config
        self.paths = RecipePaths(config)
        self.python = python
        self.apptainer = apptainer
        self._cores = cores
        self.root = Path(root)
        self._defaults = default_resources()

    @classmethod
    def for_workflow(cls, config: dict, workflow: Any) -> Jobs:
        """The jobs of the running Snakemake `workflow` (its deployment method and cores)."""
        apptainer = uses_apptainer(getattr(workflow, "deployment_settings", None))
        return cls(config, python=python_command(apptainer), cores=lambda: workflow.cores, apptainer=apptainer)

    def cores(self) -> int:
        return self._cores() if callable(self._cores) else self._cores

    def run_stage(self, command: str, launcher: str | None = None) -> str:
        """Shell command running a stage script with its output in {log}; failures surface the last log line.
        `launcher` replaces the plain interpreter (the train rule passes {params.launch}: torchrun for gpus > 1)."""
        return f"{launcher or self.python} {command} > {{log}} 2>&1 || {{{{ tail -n 1 {{log}} >&2; exit 1; }}}}"

    # -- params that carry what a rule reads: the rule reruns when it changes, nothing else does

    def recipe_hash(self, wildcards) -> str:
        """Hash of the whole recipe, for rules that read all of it (the report)."""
        return recipe_hash(self.config, wildcards.recipe)

    def rule_hash(self, rule: str) -> Callable[[Any], str]:
        """Hash of the settings `rule` reads (RecipePaths.rule_hash): an edit reruns the rules that read it and,
        through their outputs, what depends on them, nothing upstream or beside them."""

        def param(wildcards):
            return self.paths.rule_hash(rule, wildcards.recipe, **{k: v for k, v in wildcards.items() if k != "recipe"})

        return param

    def entry_hash(self, section: str, wildcard: str) -> Callable[[Any], str]:
        """Hash of one `models:` / `datasets:` entry: its rule reruns when that entry changes, not when another does."""

        def param(wildcards):
            return settings_hash(self.config[section][getattr(wildcards, wildcard)])

        return param

    # -- threads and resources

    def stage_resources(self, stage: str) -> StageResources:
        return StageResources(self.config, stage, self._defaults)

    def _lookup(self, stage: str | Callable) -> Callable:
        return stage if callable(stage) else self.stage_resources(stage)

    def slurm(self, stage: str | Callable) -> dict[str, Callable]:
        """The SLURM resources of a stage's job (menagerie.resources: one task per node with all its GPUs), one
        callable per key, for `resources: **JOBS.slurm(...)`. `stage`: a stage name, STAGE_WILDCARD, or a function of
        the wildcards giving a `resources:` block. The runtime (grown with the retry attempt) is capped by what the
        recipe's `budget:` has left (budget.cap_runtime)."""
        lookup = self._lookup(stage)

        def getter(key):
            def get(wildcards, attempt=1):
                block = lookup(wildcards)
                value = slurm_resources(block, attempt)[key]
                if key == "runtime" and isinstance(lookup, StageResources):  # never beyond the budget's rest
                    value = cap_runtime(
                        value,
                        min(int(block["runtime_min"]), max_job_runtime()),
                        self.root / "results" / wildcards.recipe,
                        self.config["recipes"][wildcards.recipe],
                        lookup.stage_name(wildcards),
                        int(block["gpus"]) * int(block.get("nodes") or 1),
                    )
                return value

            return get

        return {key: getter(key) for key in SLURM_KEYS}

    def threads(self, stage: str | Callable) -> Callable[[Any], int]:
        """Threads of a stage's job: the CPUs one node of a GPU job gets (gpus x cpus_per_gpu), else the cores."""
        lookup = self._lookup(stage)

        def threads(wildcards):
            return job_threads(lookup(wildcards), self.cores())

        return threads

    def model_resources(self) -> dict[str, Callable]:
        return {key: per_attempt(value) for key, value in MODEL_RESOURCES.items()}

    # -- data (rules/data.smk)

    def local_dataset_file(self, wildcards) -> list[str]:
        """A local source is an input (edits rerun the data stage) once it exists; until then the stage explains."""
        entry = self.config["datasets"].get(wildcards.dataset, {})
        if entry.get("source") == "local" and (self.root / entry["path"]).exists():
            return [entry["path"]]
        return []

    def ni_dataset(self, wildcards) -> str:
        """The ni_sampling dataset whose settings make the predictions under resources/ni/<key>/."""
        return self.paths.ni_dataset_for_key(wildcards.key)

    def ni_predict_inputs(self, wildcards) -> dict[str, str]:
        """Task rows, base model and (once it exists; until then the stage explains) the task list of a predictions
        job."""
        inputs = self.paths.ni_predict_inputs(wildcards.key)
        task_list = self.config["datasets"][self.ni_dataset(wildcards)]["ni"]["selection"]["task_list"]
        if task_list and (self.root / task_list).exists():
            inputs["task_list"] = task_list
        return inputs

    def ni_inference_resources(self, wildcards) -> dict:
        """The `ni.inference.resources` of a predictions job's dataset (SLURM maps them like a stage's)."""
        return self.config["datasets"][self.ni_dataset(wildcards)]["ni"]["inference"]["resources"]

    def ni_sample_inputs(self, wildcards) -> dict[str, str]:
        return {
            "tasks": dataset_file(self.config["datasets"][wildcards.dataset]["tasks"]),
            "predictions": self.paths.ni_predictions(wildcards.dataset),
        }

    def contamination_inputs(self, wildcards) -> list[str]:
        return list(self.paths.contamination_inputs(wildcards.recipe).values())

    def contamination_inputs_arg(self, wildcards) -> str:
        return name_path_words(self.paths.contamination_inputs(wildcards.recipe))

    def mixture_inputs(self, wildcards) -> dict[str, str]:
        return self.paths.mixture_datasets(wildcards.recipe, wildcards.part)

    def mixture_raw_arg(self, wildcards) -> str:
        return name_path_words(self.paths.mixture_datasets(wildcards.recipe, wildcards.part))

    # -- training and merging (rules/train.smk, rules/merge.smk)

    def train_model(self, wildcards) -> str:
        return self.paths.stage_input(wildcards.recipe, wildcards.stage)

    def launcher(self, stage: str) -> Callable[[Any], str]:
        """The interpreter words of a training job: one process per GPU (torchrun) inside the one job, by the stage's
        resources; MENAGERIE_NPROC overrides the count."""
        lookup = self.stage_resources(stage)

        def launcher(wildcards):
            resources = lookup(wildcards)
            nodes = launch.node_count(resources)
            if self.apptainer and nodes > 1:  # backstop of exit_if_multi_node_in_images (targets not on argv)
                raise ConfigError(multi_node_in_image(wildcards.recipe, wildcards.stage, nodes))
            return launch.shell_prefix(resources, self.python)

        return launcher

    def merge_inputs(self, wildcards) -> dict[str, Any]:
        return self.paths.merge_inputs(wildcards.recipe, wildcards.stage)

    def merge_dtype(self, wildcards) -> str:
        return self.paths.merge_dtype(wildcards.recipe, wildcards.stage)

    # -- evaluation and report (rules/evaluate.smk)

    def evaluate_inputs(self, wildcards) -> dict[str, str]:
        """The model results/evals/<model_key>/<suite_hash>/ scores and its suites' dataset files (by name)."""
        return self.paths.eval_job_inputs(wildcards.model_key, wildcards.suite_hash)

    def eval_data_arg(self, wildcards) -> str:
        return name_path_words({k: v for k, v in self.evaluate_inputs(wildcards).items() if k != "model"})

    def eval_job_resources(self, wildcards) -> dict:
        """The `eval.resources` of the first recipe asking for the evaluation (where it runs, not what it scores)."""
        recipe = self.paths.eval_job(wildcards.model_key, wildcards.suite_hash)[1]
        return self.config["recipes"][recipe]["eval"].get("resources") or self._defaults

    def report_inputs(self, wildcards) -> dict[str, str]:
        """The metrics eval.json assembles, by role: final, base (eval.compare_base), start (RecipePaths.evaluations:
        the shared evaluations)."""
        return self.paths.evaluations(wildcards.recipe)

    def final_evaluation(self, wildcards) -> str:
        return self.paths.evaluations(wildcards.recipe)["final"]

    def report_base_arg(self, wildcards, input) -> str:  # `input`: Snakemake passes the job's inputs by that name
        return f"--base {input.base}" if "base" in input.keys() else ""

    def report_start_arg(self, wildcards, input) -> str:
        if "start" not in input.keys():
            return ""
        return f"--start {input.start} --start-model {self.paths.start_model(wildcards.recipe)}"

    def final_model(self, wildcards) -> str:
        return self.paths.final_model(wildcards.recipe)

    def stage_records_arg(self, wildcards) -> str:
        return name_path_words(self.paths.stage_records(wildcards.recipe))

    def openllm_v1_recipes(self) -> list[str]:
        """The recipes scored on the openllm-v1 suite (they get the Open LLM Leaderboard v1 results.json)."""
        return sorted(n for n, r in self.config["recipes"].items() if "openllm-v1" in r["eval"]["suites"])

    def openllm_v1_outputs(self, recipe: str) -> list[str]:
        return [f"results/{recipe}/openllm_v1/results.json"] if recipe in self.openllm_v1_recipes() else []

    def recipe_outputs(self, recipe: str) -> list[str]:
        """What a build of `recipe` leaves: eval.json, lm-eval's native results per evaluated model and, for recipes
        on the openllm-v1 suite, the v1 results file (rule all asks for these for the configured recipe)."""
        outputs = [f"results/{recipe}/eval.json"]
        outputs += [str(Path(metrics).parent / "lm_eval") for metrics in self.paths.evaluations(recipe).values()]
        return outputs + self.openllm_v1_outputs(recipe)

    # -- leaderboard (rules/leaderboard.smk)

    def leaderboard_inputs(self, wildcards) -> list[str]:
        """Every recipe's eval.json built so far (results/*/eval.json) and the configured recipe's."""
        built = set(glob.glob("results/*/eval.json", root_dir=self.root))
        built.add(f"results/{self.config['recipe']}/eval.json")
        return sorted(built)

    def leaderboard_openllm_v1(self, wildcards) -> list[str]:
        """The configured recipe's v1 results file, built first so that the page links it (the v1 files of other
        recipes are linked when they exist)."""
        return self.openllm_v1_outputs(self.config["recipe"])
