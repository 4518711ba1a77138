# SFT and DPO. Checkpoints go to results/<recipe>/.work/<stage> (kept across failures, for resume).


rule train:
    input:
        model=JOBS.train_model,
        train="results/{recipe}/data/decontaminated",   # the contamination gate's output (rules/data.smk)
        validation="results/{recipe}/data/{stage}_val.jsonl",
    output:
        # the loss curve is a result of `snakemake --report` (make report): category Training, one per recipe/stage
        model=report(directory("results/{recipe}/{stage}"), patterns=["{plot,loss_curve}.png"],
                     caption="report/loss_curve.rst", category="Training", subcategory="{recipe}",
                     labels={"stage": "{stage}"}),
    params:
        settings_hash=JOBS.rule_hash("train"),
        work="results/{recipe}/.work/{stage}",
        # one process per GPU (torchrun) inside this one job; MENAGERIE_NPROC overrides the count
        launch=JOBS.launcher(STAGE_WILDCARD),
    log:
        "logs/{recipe}/{stage}.log",
    container: CONTAINERS.get("train")
    threads: JOBS.threads(STAGE_WILDCARD)
    resources:
        **JOBS.slurm(STAGE_WILDCARD),
    shell:
        JOBS.run_stage("scripts/train.py {wildcards.stage} --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                       "--model {input.model} --train {input.train}/{wildcards.stage}.jsonl "
                       "--validation {input.validation} --out {output.model} --work {params.work}",
                       launcher="{params.launch}")
