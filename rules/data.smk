# Datasets (generated, hub or local) -> each recipe's sft/dpo mixture with a validation split and a report.


def _note_unpinned_hub_datasets():
    """One `note:` line (dry runs included) per unpinned hub dataset the requested recipes read (targets
    results/<recipe>/... on the command line, else the default recipe); their dataset stage stops until
    `revision:` is set. Snakemake fills in its targets only after parsing, hence the command line."""
    from menagerie.data.sources import unpinned_revision_problem

    recipes = {a.split("/")[1] for a in sys.argv[1:] if a.startswith("results/") and a.count("/") >= 2}
    recipes = sorted(r for r in recipes if r in CONFIG["recipes"]) or [
        r for r in [CONFIG.get("recipe")] if r in CONFIG["recipes"]]
    names = dict.fromkeys(d for r in recipes for d in PATHS.datasets_read(r))
    for name in names:
        problem = unpinned_revision_problem(name, CONFIG["datasets"][name])
        if problem:
            sys.stderr.write(f"note: {problem}\n")


_note_unpinned_hub_datasets()


def local_dataset_file(wildcards):
    """A local source is an input (edits rerun the data stage) once it exists; until then the stage explains."""
    entry = CONFIG["datasets"].get(wildcards.dataset, {})
    if entry.get("source") == "local" and Path(entry["path"]).exists():
        return [entry["path"]]
    return []


rule dataset:
    input:
        local_dataset_file,
    output:
        rows="resources/datasets/{dataset}.jsonl",
    params:
        entry_hash=entry_hash_param("datasets", "dataset"),
    log:
        "logs/dataset/{dataset}.log",
    container: CONTAINERS.get("train")
    shell:
        run_stage("scripts/prepare_data.py materialize --config {RESOLVED_CONFIG} --dataset {wildcards.dataset} "
                  "--out {output.rows}")


# Birbal's Natural Instructions sampling ([BB] §3, menagerie/data/ni_sampling.py): the base model's few-shot
# predictions on the selected NI tasks (one job per tasks/model/selection/inference key, shared by the datasets that
# agree on them), then each `source: ni_sampling` dataset is scored, bucketed and drawn from them. Its rows are an
# ordinary dataset file, which the mixtures take like any other.
import re


def ni_predict_inputs(wildcards):
    inputs = PATHS.ni_predict_inputs(wildcards.key)
    task_list = CONFIG["datasets"][PATHS.ni_dataset_for_key(wildcards.key)]["ni"]["selection"]["task_list"]
    if task_list and Path(task_list).exists():   # an input once it exists; until then the stage explains
        inputs["task_list"] = task_list
    return inputs


def ni_inference_resources(wildcards):
    """The `ni.inference.resources` of a predictions job's dataset (SLURM maps them like a stage's)."""
    return CONFIG["datasets"][PATHS.ni_dataset_for_key(wildcards.key)]["ni"]["inference"]["resources"]


rule ni_predict:
    input:
        unpack(ni_predict_inputs),
    output:
        predictions="resources/ni/{key}/predictions.jsonl",
        provenance="resources/ni/{key}/predictions.provenance.json",
    params:
        dataset=lambda w: PATHS.ni_dataset_for_key(w.key),
    wildcard_constraints:
        key="[A-Za-z0-9._-]+",
    log:
        "logs/ni/{key}.log",
    container: CONTAINERS.get("eval")
    threads: stage_threads(ni_inference_resources)
    resources:
        **stage_slurm(ni_inference_resources),
    shell:
        run_stage("scripts/ni_sample.py predict --config {RESOLVED_CONFIG} --dataset {params.dataset} "
                  "--tasks {input.tasks} --model {input.model} --out {output.predictions} "
                  "--provenance {output.provenance}")


rule ni_sample:
    input:
        tasks=lambda w: dataset_file(CONFIG["datasets"][w.dataset]["tasks"]),
        predictions=lambda w: PATHS.ni_predictions(w.dataset),
    output:
        rows="resources/datasets/{dataset}.jsonl",
        report="resources/datasets/{dataset}_report.json",
    params:
        entry_hash=entry_hash_param("datasets", "dataset"),
    wildcard_constraints:
        dataset="|".join(re.escape(n) for n in PATHS.ni_datasets()) or "(?!)",
    log:
        "logs/dataset/{dataset}.log",
    container: CONTAINERS.get("train")
    shell:
        run_stage("scripts/ni_sample.py sample --config {RESOLVED_CONFIG} --dataset {wildcards.dataset} "
                  "--tasks {input.tasks} --predictions {input.predictions} --out {output.rows} "
                  "--report {output.report}")


ruleorder: ni_sample > dataset


rule contamination:
    # training rows vs the test items of the recipe's eval tasks (n-gram + MiniLM cosine); drop / warn / fail
    input:
        lambda w: list(PATHS.contamination_inputs(w.recipe).values()),
    output:
        report="results/{recipe}/data/contamination.json",
        clean=directory("results/{recipe}/data/decontaminated"),
    params:
        settings_hash=rule_hash_param("contamination"),
        inputs=lambda w: " ".join(f"{k}={v}" for k, v in PATHS.contamination_inputs(w.recipe).items()),
    log:
        "logs/{recipe}/contamination.log",
    container: CONTAINERS.get("train")
    threads: stage_threads(stage_resources("contamination"))
    resources:
        **stage_slurm(stage_resources("contamination")),
    shell:
        run_stage("scripts/prepare_data.py contamination --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--inputs {params.inputs} --report {output.report} --out-dir {output.clean} "
                  "--workers {threads}")


rule mixture:
    input:
        unpack(lambda w: PATHS.mixture_datasets(w.recipe, w.part)),
    output:
        train="results/{recipe}/data/{part}.jsonl",
        validation="results/{recipe}/data/{part}_val.jsonl",
        report="results/{recipe}/data/{part}_report.json",
    params:
        settings_hash=rule_hash_param("mixture"),
        raw=lambda w: " ".join(f"{k}={v}" for k, v in PATHS.mixture_datasets(w.recipe, w.part).items()),
    wildcard_constraints:
        part="sft|dpo",
    log:
        "logs/{recipe}/data_{part}.log",
    container: CONTAINERS.get("train")
    shell:
        run_stage("scripts/prepare_data.py mixture --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--part {wildcards.part} --raw {params.raw} --train {output.train} "
                  "--validation {output.validation} --report {output.report}")
