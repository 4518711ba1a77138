# Fold a stage's adapter into its base (or, Platypus-style, into another fine-tune of the same base).


rule merge:
    input:
        unpack(lambda w: PATHS.merge_inputs(w.recipe, w.stage)),
    output:
        model=directory("results/{recipe}/{stage}_merged"),
    params:
        dtype=lambda w: PATHS.merge_dtype(w.recipe, w.stage),
        settings_hash=rule_hash_param("merge"),
    log:
        "logs/{recipe}/{stage}_merge.log",
    container: CONTAINERS.get("train")
    threads: stage_threads(stage_resources("merge"))
    resources:
        **stage_slurm(stage_resources("merge")),
    shell:
        run_stage("scripts/merge.py --adapter {input.adapter} --into {input.into} --out {output.model} "
                  "--dtype {params.dtype} --label '{wildcards.recipe} ({wildcards.stage} merged)' "
                  "--config {RESOLVED_CONFIG} --recipe {wildcards.recipe} --stage {wildcards.stage}")
