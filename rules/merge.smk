# Fold a stage's adapter into its base (or, Platypus-style, into another fine-tune of the same base).


rule merge:
    input:
        unpack(JOBS.merge_inputs),
    output:
        model=directory("results/{recipe}/{stage}_merged"),
    params:
        dtype=JOBS.merge_dtype,
        settings_hash=JOBS.rule_hash("merge"),
    log:
        "logs/{recipe}/{stage}_merge.log",
    container: CONTAINERS.get("train")
    threads: JOBS.threads("merge")
    resources:
        **JOBS.slurm("merge"),
    shell:
        JOBS.run_stage("scripts/merge.py --adapter {input.adapter} --into {input.into} --out {output.model} "
                       "--dtype {params.dtype} --label '{wildcards.recipe} ({wildcards.stage} merged)' "
                       "--config {RESOLVED_CONFIG} --recipe {wildcards.recipe} --stage {wildcards.stage}")
