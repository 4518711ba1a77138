# Base models: the packaged GGUF converted to safetensors, or hub/local weights linked in (offline-first).


rule model:
    output:
        model=directory("resources/models/{model}"),
    params:
        entry_hash=entry_hash_param("models", "model"),
    log:
        "logs/model/{model}.log",
    resources:
        mem_mb=8192,
        runtime=60,
    shell:
        run_stage("scripts/model.py --config {RESOLVED_CONFIG} --model {wildcards.model} --out {output.model}")
