# Score the final model and the base model on the recipe's suites, then assemble eval.json.
import re


def eval_model(wildcards):
    if wildcards.which == "base":
        return PATHS.eval_base_model(wildcards.recipe)
    if wildcards.which == "start":   # the model the last training stage started from (DPO: its SFT model)
        return PATHS.start_model(wildcards.recipe)
    return PATHS.final_model(wildcards.recipe)


rule evaluate:
    input:
        unpack(lambda w: {"model": eval_model(w), **PATHS.eval_datasets(w.recipe)}),
    output:
        metrics="results/{recipe}/eval/{which}/metrics.json",
    params:
        settings_hash=rule_hash_param("evaluate"),
        data=lambda w: " ".join(f"{k}={v}" for k, v in PATHS.eval_datasets(w.recipe).items()),
        work="results/{recipe}/eval/{which}/work",
    log:
        "logs/{recipe}/evaluate_{which}.log",
    container: CONTAINERS.get("eval")
    threads: stage_threads(stage_resources("eval"))
    resources:
        **stage_slurm(stage_resources("eval")),
    shell:
        run_stage("scripts/evaluate.py model --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--model {input.model} --which {wildcards.which} --data {params.data} --work {params.work} "
                  "--out {output.metrics}")


def report_inputs(wildcards):
    inputs = {"final": f"results/{wildcards.recipe}/eval/final/metrics.json"}
    if CONFIG["recipes"][wildcards.recipe]["eval"]["compare_base"]:
        inputs["base"] = f"results/{wildcards.recipe}/eval/base/metrics.json"
    if PATHS.start_metrics(wildcards.recipe):
        inputs["start"] = PATHS.start_metrics(wildcards.recipe)
    return inputs


rule report:
    input:
        unpack(report_inputs),
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
        metrics="results/{recipe}/eval/{which}/metrics.json",
    output:
        directory("results/{recipe}/eval/{which}/lm_eval"),
    log:
        "logs/{recipe}/lm_eval_native_{which}.log",
    container: CONTAINERS.get("train")
    shell:
        run_stage("scripts/evaluate.py lm-eval-native --config {RESOLVED_CONFIG} --recipe {wildcards.recipe} "
                  "--metrics {input.metrics} --out {output}")


# The Open LLM Leaderboard v1 results.json of the final model, only for recipes scored on that suite.
OPENLLM_V1_RECIPES = sorted(n for n, r in CONFIG["recipes"].items() if "openllm-v1" in r["eval"]["suites"])


rule openllm_v1:
    input:
        metrics="results/{recipe}/eval/final/metrics.json",
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
    outputs = [f"results/{recipe}/eval.json", f"results/{recipe}/eval/final/lm_eval"]
    if CONFIG["recipes"][recipe]["eval"]["compare_base"]:
        outputs.append(f"results/{recipe}/eval/base/lm_eval")
    start = PATHS.start_metrics(recipe)
    if start:
        outputs.append(str(Path(start).parent / "lm_eval"))
    return outputs + openllm_v1_outputs(recipe)
