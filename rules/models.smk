# Base models: the packaged GGUF converted to safetensors, or hub/local weights linked in (offline-first).


rule model:
    output:
        model=directory("resources/models/{model}"),
    params:
        entry_hash=entry_hash_param("models", "model"),
    log:
        "logs/model/{model}.log",
    container: CONTAINERS.get("train")
    resources:
        mem_mb=lambda w, attempt: 8192 * attempt,
        runtime=lambda w, attempt: 60 * attempt,
    shell:
        run_stage("scripts/model.py --config {RESOLVED_CONFIG} --model {wildcards.model} --out {output.model}")
