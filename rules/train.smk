# SFT and DPO. Checkpoints go to results/<recipe>/.work/<stage> (kept across failures, for resume).
from menagerie.train import launch as train_launch


rule train:
    input:
        model=lambda w: PATHS.stage_input(w.recipe, w.stage),
        train="results/{recipe}/data/decontaminated",   # the contamination gate's output (rules/data.smk)
        validation="results/{recipe}/data/{stage}_val.jsonl",
    output:
        model=directory("results/{recipe}/{stage}"),
    params:
        settings_hash=rule_hash_param("train"),
        work="results/{recipe}/.work/{stage}",
        # one process per GPU (torchrun) inside this one job; MENAGERIE_NPROC overrides the count
        launch=lambda w: train_launch.shell_prefix(stage_resources(lambda w: w.stage)(w), PYTHON),
    log:
        "logs/{recipe}/{stage}.log",
    container: CONTAINERS.get("train")
    threads: stage_threads(stage_resources(lambda w: w.stage))
    resources:
        **stage_slurm(stage_resources(lambda w: w.stage)),
    shell:
        run_stage("scripts/train.py {wildcards.stage} --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--model {input.model} --train {input.train}/{wildcards.stage}.jsonl --validation {input.validation} "
                  "--out {output.model} --work {params.work}", launcher="{params.launch}")
