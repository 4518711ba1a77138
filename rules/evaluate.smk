# Score each model once per suite settings (results/evals/<model key>/<suite hash>/, menagerie.workflow
# RecipePaths.eval_dir: recipes that share a base model and suite share the job), then assemble each recipe's eval.json.
import re


def eval_job_resources(wildcards):
    """The `eval.resources` of the first recipe asking for the evaluation (where it runs, not what it scores)."""
    recipe = PATHS.eval_job(wildcards.model_key, wildcards.suite_hash)[1]
    return CONFIG["recipes"][recipe]["eval"].get("resources") or DEFAULT_RESOURCES


rule evaluate:
    input:
        unpack(lambda w: PATHS.eval_job_inputs(w.model_key, w.suite_hash)),
    output:
        metrics="results/evals/{model_key}/{suite_hash}/metrics.json",
    params:
        data=lambda w: " ".join(f"{k}={v}" for k, v in PATHS.eval_job_inputs(w.model_key, w.suite_hash).items()
                                if k != "model"),
        work="results/evals/{model_key}/{suite_hash}/work",
    log:
        "logs/evals/{model_key}/{suite_hash}/evaluate.log",
    container: CONTAINERS.get("eval")
    threads: stage_threads(eval_job_resources)
    resources:
        **stage_slurm(eval_job_resources),
    shell:
        run_stage("scripts/evaluate.py model --config {RESOLVED_CONFIG} "
                  "--key {wildcards.model_key}/{wildcards.suite_hash} --model {input.model} --data {params.data} "
                  "--work {params.work} --out {output.metrics}")


rule report:
    input:
        unpack(lambda w: PATHS.evaluations(w.recipe)),
    output:
        eval="results/{recipe}/eval.json",
    params:
        recipe_hash=recipe_hash_param,
        base=lambda w, input: f"--base {input.base}" if "base" in input.keys() else "",
        start=lambda w, input: (f"--start {input.start} --start-model {PATHS.start_model(w.recipe)}"
                                if "start" in input.keys() else ""),
        final_model=lambda w: PATHS.final_model(w.recipe),
        stages=lambda w: " ".join(f"{k}={v}" for k, v in PATHS.stage_records(w.recipe).items()),
    log:
        "logs/{recipe}/report.log",
    container: CONTAINERS.get("train")
    shell:
        run_stage("scripts/evaluate.py report --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
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
        run_stage("scripts/evaluate.py lm-eval-native --config {RESOLVED_CONFIG} "
                  "--key {wildcards.model_key}/{wildcards.suite_hash} --metrics {input.metrics} --out {output}")


# The Open LLM Leaderboard v1 results.json of the final model, only for recipes scored on that suite.
OPENLLM_V1_RECIPES = sorted(n for n, r in CONFIG["recipes"].items() if "openllm-v1" in r["eval"]["suites"])


rule openllm_v1:
    input:
        metrics=lambda w: PATHS.evaluations(w.recipe)["final"],
    output:
        "results/{recipe}/openllm_v1/results.json",
    wildcard_constraints:
        recipe="|".join(re.escape(n) for n in OPENLLM_V1_RECIPES) or "(?!)",
    log:
        "logs/{recipe}/openllm_v1.log",
    container: CONTAINERS.get("train")
    shell:
        run_stage("scripts/evaluate.py openllm-v1 --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--metrics {input.metrics} --out {output}")


def openllm_v1_outputs(recipe):
    return [f"results/{recipe}/openllm_v1/results.json"] if recipe in OPENLLM_V1_RECIPES else []


def recipe_outputs(recipe):
    """What a build of `recipe` leaves: eval.json, lm-eval's native results per evaluated model and, for recipes
    on the openllm-v1 suite, the v1 results file (rule all asks for these for the configured recipe)."""
    outputs = [f"results/{recipe}/eval.json"]
    outputs += [str(Path(metrics).parent / "lm_eval") for metrics in PATHS.evaluations(recipe).values()]
    return outputs + openllm_v1_outputs(recipe)
