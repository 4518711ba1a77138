# Base models: the packaged GGUF converted to safetensors, or hub/local weights linked in (offline-first).


rule model:
    output:
        model=directory("resources/models/{model}"),
    params:
        entry_hash=JOBS.entry_hash("models", "model"),
    log:
        "logs/model/{model}.log",
    container: CONTAINERS.get("train")
    resources:
        **JOBS.model_resources(),
    shell:
        JOBS.run_stage("scripts/model.py --config {RESOLVED_CONFIG} --model {wildcards.model} --out {output.model}")
