# Datasets (generated, hub or local) -> each recipe's sft/dpo mixture with a validation split and a report.


rule dataset:
    input:
        JOBS.local_dataset_file,
    output:
        rows="resources/datasets/{dataset}.jsonl",
    params:
        entry_hash=JOBS.entry_hash("datasets", "dataset"),
    log:
        "logs/dataset/{dataset}.log",
    container: CONTAINERS.get("train")
    shell:
        JOBS.run_stage("scripts/prepare_data.py materialize --config {RESOLVED_CONFIG} --dataset {wildcards.dataset} "
                       "--out {output.rows}")


# Birbal's Natural Instructions sampling ([BB] §3, menagerie/data/ni_sampling.py): the base model's few-shot
# predictions on the selected NI tasks (one job per tasks/model/selection/inference key, shared by the datasets that
# agree on them), then each `source: ni_sampling` dataset is scored, bucketed and drawn from them. Its rows are an
# ordinary dataset file, which the mixtures take like any other.


rule ni_predict:
    input:
        unpack(JOBS.ni_predict_inputs),
    output:
        predictions="resources/ni/{key}/predictions.jsonl",
        provenance="resources/ni/{key}/predictions.provenance.json",
    params:
        dataset=JOBS.ni_dataset,
    wildcard_constraints:
        key="[A-Za-z0-9._-]+",
    log:
        "logs/ni/{key}.log",
    container: CONTAINERS.get("eval")
    threads: JOBS.threads(JOBS.ni_inference_resources)
    resources:
        **JOBS.slurm(JOBS.ni_inference_resources),
    shell:
        JOBS.run_stage("scripts/ni_sample.py predict --config {RESOLVED_CONFIG} --dataset {params.dataset} "
                       "--tasks {input.tasks} --model {input.model} --out {output.predictions} "
                       "--provenance {output.provenance}")


rule ni_sample:
    input:
        unpack(JOBS.ni_sample_inputs),
    output:
        rows="resources/datasets/{dataset}.jsonl",
        report="resources/datasets/{dataset}_report.json",
    params:
        entry_hash=JOBS.entry_hash("datasets", "dataset"),
    wildcard_constraints:
        dataset=one_of(JOBS.paths.ni_datasets()),
    log:
        "logs/dataset/{dataset}.log",
    container: CONTAINERS.get("train")
    shell:
        JOBS.run_stage("scripts/ni_sample.py sample --config {RESOLVED_CONFIG} --dataset {wildcards.dataset} "
                       "--tasks {input.tasks} --predictions {input.predictions} --out {output.rows} "
                       "--report {output.report}")


ruleorder: ni_sample > dataset


rule contamination:
    # training rows vs the test items of the recipe's eval tasks (n-gram + MiniLM cosine); drop / warn / fail
    input:
        JOBS.contamination_inputs,
    output:
        report="results/{recipe}/data/contamination.json",
        clean=directory("results/{recipe}/data/decontaminated"),
    params:
        settings_hash=JOBS.rule_hash("contamination"),
        inputs=JOBS.contamination_inputs_arg,
    log:
        "logs/{recipe}/contamination.log",
    container: CONTAINERS.get("train")
    threads: JOBS.threads("contamination")
    resources:
        **JOBS.slurm("contamination"),
    shell:
        JOBS.run_stage("scripts/prepare_data.py contamination --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                       "--inputs {params.inputs} --report {output.report} --out-dir {output.clean} "
                       "--workers {threads}")


rule mixture:
    input:
        unpack(JOBS.mixture_inputs),
    output:
        train="results/{recipe}/data/{part}.jsonl",
        validation="results/{recipe}/data/{part}_val.jsonl",
        report="results/{recipe}/data/{part}_report.json",
    params:
        settings_hash=JOBS.rule_hash("mixture"),
        raw=JOBS.mixture_raw_arg,
    wildcard_constraints:
        part="sft|dpo",
    log:
        "logs/{recipe}/data_{part}.log",
    container: CONTAINERS.get("train")
    shell:
        JOBS.run_stage("scripts/prepare_data.py mixture --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                       "--part {wildcards.part} --raw {params.raw} --train {output.train} "
                       "--validation {output.validation} --report {output.report}")
