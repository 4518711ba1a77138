# Score each model once per suite settings (results/evals/<model key>/<suite hash>/, menagerie.workflow
# RecipePaths.eval_dir: recipes that share a base model and suite share the job), then assemble each recipe's eval.json.


rule evaluate:
    input:
        unpack(JOBS.evaluate_inputs),
    output:
        metrics="results/evals/{model_key}/{suite_hash}/metrics.json",
    params:
        data=JOBS.eval_data_arg,
        work="results/evals/{model_key}/{suite_hash}/work",
    log:
        "logs/evals/{model_key}/{suite_hash}/evaluate.log",
    container: CONTAINERS.get("eval")
    threads: JOBS.threads(JOBS.eval_job_resources)
    resources:
        **JOBS.slurm(JOBS.eval_job_resources),
    shell:
        JOBS.run_stage("scripts/evaluate.py model --config {RESOLVED_CONFIG} "
                       "--key {wildcards.model_key}/{wildcards.suite_hash} --model {input.model} --data {params.data} "
                       "--work {params.work} --out {output.metrics}")


rule report:
    input:
        unpack(JOBS.report_inputs),
    output:
        eval="results/{recipe}/eval.json",
    params:
        recipe_hash=JOBS.recipe_hash,
        base=JOBS.report_base_arg,
        start=JOBS.report_start_arg,
        final_model=JOBS.final_model,
        stages=JOBS.stage_records_arg,
    log:
        "logs/{recipe}/report.log",
    container: CONTAINERS.get("train")
    shell:
        JOBS.run_stage("scripts/evaluate.py report --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                       "--final {input.final} {params.base} {params.start} --final-model {params.final_model} "
                       "--stage {params.stages} --out {output.eval}")


# lm-eval's own results file per evaluated model, laid out as `lm_eval --output_path <dir>` writes it
# (<dir>/<model_name_sanitized>/results_<time>.json), from the native results the evaluate stage keeps.
rule lm_eval_native:
    input:
        metrics="results/evals/{model_key}/{suite_hash}/metrics.json",
    output:
        directory("results/evals/{model_key}/{suite_hash}/lm_eval"),
    log:
        "logs/evals/{model_key}/{suite_hash}/lm_eval_native.log",
    container: CONTAINERS.get("train")
    shell:
        JOBS.run_stage("scripts/evaluate.py lm-eval-native --config {RESOLVED_CONFIG} "
                       "--key {wildcards.model_key}/{wildcards.suite_hash} --metrics {input.metrics} --out {output}")


# The Open LLM Leaderboard v1 results.json of the final model, only for recipes scored on that suite.
rule openllm_v1:
    input:
        metrics=JOBS.final_evaluation,
    output:
        "results/{recipe}/openllm_v1/results.json",
    wildcard_constraints:
        recipe=one_of(JOBS.openllm_v1_recipes()),
    log:
        "logs/{recipe}/openllm_v1.log",
    container: CONTAINERS.get("train")
    shell:
        JOBS.run_stage("scripts/evaluate.py openllm-v1 --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                       "--metrics {input.metrics} --out {output}")
