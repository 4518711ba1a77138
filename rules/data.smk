# Datasets (generated, hub or local) -> each recipe's sft/dpo mixture with a validation split and a report.


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


rule contamination:
    # training rows vs the test items of the recipe's eval tasks (n-gram + MiniLM cosine); drop / warn / fail
    input:
        lambda w: list(PATHS.contamination_inputs(w.recipe).values()),
    output:
        report="results/{recipe}/data/contamination.json",
        clean=directory("results/{recipe}/data/decontaminated"),
    params:
        recipe_hash=recipe_hash_param,
        inputs=lambda w: " ".join(f"{k}={v}" for k, v in PATHS.contamination_inputs(w.recipe).items()),
    log:
        "logs/{recipe}/contamination.log",
    threads: workflow.cores
    shell:
        run_stage("scripts/prepare_data.py contamination --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--inputs {params.inputs} --report {output.report} --out-dir {output.clean}")


rule mixture:
    input:
        unpack(lambda w: PATHS.mixture_datasets(w.recipe, w.part)),
    output:
        train="results/{recipe}/data/{part}.jsonl",
        validation="results/{recipe}/data/{part}_val.jsonl",
        report="results/{recipe}/data/{part}_report.json",
    params:
        recipe_hash=recipe_hash_param,
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
