# Config validation, recipe resolution and path helpers. No rules here.
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

from menagerie.config import config_schema, fill_defaults, validate_config
from menagerie.errors import ConfigError
from menagerie.plan import check_plan
from menagerie.workflow import RecipePaths, dataset_file, model_dir

try:
    CONFIG = validate_config(config)
    # every stage of every recipe must fit its declared GPUs/host memory (menagerie/plan.py, `make plan`)
    check_plan(CONFIG)
except ConfigError as exc:
    sys.stderr.write(f"error: {exc}\n")
    sys.exit(1)

PATHS = RecipePaths(CONFIG)

# The commit (and dirty state) the run starts from, asked of git once on the host; SLURM jobs (--export=ALL) and
# Apptainer images inherit the variable, so stages record it without git (menagerie.provenance.git_commit).
from menagerie.provenance import GIT_COMMIT_ENV, host_git_commit

os.environ.setdefault(GIT_COMMIT_ENV, host_git_commit(Path(workflow.basedir)))
DEFAULT_RESOURCES = fill_defaults({}, config_schema()["$defs"]["resources"], config_schema())
CONTAINERS = CONFIG.get("containers") or {}  # stage -> Apptainer image; rules' `container:` (only with --sdm apptainer)


def _uses_apptainer():
    try:
        from snakemake.settings.types import DeploymentMethod

        return DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
    except (AttributeError, ImportError):
        return False


# The environment Snakemake runs in; inside an image its own `python` (the image holds the locked environment only;
# the code is the bound working directory, which scripts/*.py put on sys.path themselves). Shell words: the train
# launcher splits them (menagerie.train.launch.interpreter) before quoting, so the host interpreter's path is quoted.
PYTHON = "python" if _uses_apptainer() else shlex.quote(sys.executable)

# The resolved config is dumped once, content-addressed: stage scripts read it through {RESOLVED_CONFIG} in their
# shell command. It is deliberately not a param (its path changes with every config edit, so every rule would rerun
# whenever any recipe changed); rules carry the hash of what they read instead: rule_hash_param, entry_hash_param.
_resolved = json.dumps(CONFIG, sort_keys=True, indent=1)
CONFIG_HASH = hashlib.sha256(_resolved.encode()).hexdigest()[:16]
RESOLVED_CONFIG = f"resources/config/{CONFIG_HASH}.json"
if not Path(RESOLVED_CONFIG).exists():
    Path(RESOLVED_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    _tmp = Path(f"{RESOLVED_CONFIG}.tmp-{os.getpid()}")
    _tmp.write_text(_resolved)
    os.replace(_tmp, RESOLVED_CONFIG)


wildcard_constraints:
    recipe="[A-Za-z0-9._-]+",
    model="[A-Za-z0-9._-]+",
    dataset="[A-Za-z0-9._-]+",
    stage="sft|dpo",
    model_key="[A-Za-z0-9._@-]+",
    suite_hash="[0-9a-f]{16}",


def recipe_hash_param(wildcards):
    """Hash of the whole recipe, for rules that read all of it (the report): they rerun when it changes."""
    from menagerie.config import recipe_hash

    return recipe_hash(CONFIG, wildcards.recipe)


def rule_hash_param(rule):
    """Hash of the settings `rule` reads (menagerie.workflow.RecipePaths.rule_hash): an edit reruns the rules that
    read it and, through their outputs, what depends on them, nothing upstream or beside them."""

    def param(wildcards):
        return PATHS.rule_hash(rule, wildcards.recipe, **{k: v for k, v in wildcards.items() if k != "recipe"})

    return param


def entry_hash_param(section, wildcard):
    """Hash of one `models:` / `datasets:` entry: its rule reruns when that entry changes, not when another does."""

    def param(wildcards):
        entry = CONFIG[section][getattr(wildcards, wildcard)]
        return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:16]

    return param


def stage_resources(section):
    """Resource declarations from the recipe: gpus, gpu model, memory, runtime (SLURM maps these)."""

    def lookup(wildcards):
        recipe = CONFIG["recipes"][wildcards.recipe]
        stage = section(wildcards) if callable(section) else section
        if stage in ("eval", "contamination"):
            settings = recipe[stage]
        else:
            settings = recipe["stages"].get(stage) or {}
        return settings.get("resources") or DEFAULT_RESOURCES

    lookup.stage = section   # the stage name (or a function of the wildcards giving it), for the budget's cap
    return lookup


def stage_slurm(lookup):
    """The SLURM resources of a stage's job (menagerie.resources: one task per node with all its GPUs), one callable
    per key, for `resources: **stage_slurm(...)`. `lookup(wildcards)` returns the stage's `resources:` block. The
    runtime (grown with the retry attempt) is capped by what the recipe's `budget:` has left (budget.cap_runtime)."""
    from menagerie.resources import SLURM_KEYS, max_job_runtime, slurm_resources
    from menagerie.train.budget import cap_runtime

    def getter(key):
        def get(wildcards, attempt=1):
            value = slurm_resources(lookup(wildcards), attempt)[key]
            if key == "runtime" and hasattr(wildcards, "recipe"):   # never beyond what the recipe's budget has left
                r = lookup(wildcards)
                stage = getattr(lookup, "stage", None)
                value = cap_runtime(value, min(int(r["runtime_min"]), max_job_runtime()), f"results/{wildcards.recipe}",
                                    CONFIG["recipes"][wildcards.recipe], stage(wildcards) if callable(stage) else stage,
                                    int(r["gpus"]) * int(r.get("nodes") or 1))
            return value

        return get

    return {key: getter(key) for key in SLURM_KEYS}


def stage_threads(lookup):
    """Threads of a stage's job: the CPUs one node of a GPU job gets (gpus x cpus_per_gpu), else workflow.cores."""
    from menagerie.resources import job_threads

    return lambda wildcards: job_threads(lookup(wildcards), workflow.cores)


def run_stage(command, launcher=None):
    """Shell command running a stage script with its output in {log}; failures surface the last log line.

    `launcher` replaces the plain interpreter (the train rule passes {params.launch}: torchrun for gpus > 1)."""
    return f"{launcher or PYTHON} {command} > {{log}} 2>&1 || {{{{ tail -n 1 {{log}} >&2; exit 1; }}}}"
