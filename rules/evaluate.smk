# Score the final model and the base model on the recipe's suites, then assemble eval.json.


def eval_model(wildcards):
    if wildcards.which == "base":
        return PATHS.base_model(wildcards.recipe)
    return PATHS.final_model(wildcards.recipe)


rule evaluate:
    input:
        unpack(lambda w: {"model": eval_model(w), **PATHS.eval_datasets(w.recipe)}),
    output:
        metrics="results/{recipe}/eval/{which}/metrics.json",
    params:
        recipe_hash=recipe_hash_param,
        data=lambda w: " ".join(f"{k}={v}" for k, v in PATHS.eval_datasets(w.recipe).items()),
        work="results/{recipe}/eval/{which}/work",
    log:
        "logs/{recipe}/evaluate_{which}.log",
    container: CONTAINERS.get("eval")
    threads: workflow.cores
    resources:
        gpu=resource_getter("eval", "gpu"),
        gpu_model=resource_getter("eval", "gpu_model"),
        cpus_per_gpu=resource_getter("eval", "cpus_per_gpu"),
        mem_mb=resource_getter("eval", "mem_mb"),
        runtime=resource_getter("eval", "runtime"),
    shell:
        run_stage("scripts/evaluate.py model --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--model {input.model} --which {wildcards.which} --data {params.data} --work {params.work} "
                  "--out {output.metrics}")


def report_inputs(wildcards):
    inputs = {"final": f"results/{wildcards.recipe}/eval/final/metrics.json"}
    if CONFIG["recipes"][wildcards.recipe]["eval"]["compare_base"]:
        inputs["base"] = f"results/{wildcards.recipe}/eval/base/metrics.json"
    return inputs


rule report:
    input:
        unpack(report_inputs),
    output:
        eval="results/{recipe}/eval.json",
    params:
        recipe_hash=recipe_hash_param,
        base=lambda w, input: f"--base {input.base}" if "base" in input.keys() else "",
        final_model=lambda w: PATHS.final_model(w.recipe),
        stages=lambda w: " ".join(f"{k}={v}" for k, v in PATHS.stage_records(w.recipe).items()),
    log:
        "logs/{recipe}/report.log",
    container: CONTAINERS.get("train")
    shell:
        run_stage("scripts/evaluate.py report --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--final {input.final} {params.base} --final-model {params.final_model} "
                  "--stage {params.stages} --out {output.eval}")
