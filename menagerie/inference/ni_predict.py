"""Birbal's NI sampling, inference half: the base model's greedy few-shot predictions on the selected NI tasks
(rules in menagerie.data.ni_sampling), through the eval stage's vLLM runner (menagerie.inference.vllm_lm, same
engine settings) or HF generate."""

from __future__ import annotations

from pathlib import Path

from menagerie.data.ni_sampling import STOP, clean_prediction, few_shot_prompt, scored_instances, select_tasks
from menagerie.device import has_cuda
from menagerie.errors import MenagerieError
from menagerie.formats import load_tokenizer
from menagerie.io import atomic_open, jsonl_line


def greedy_generate(
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, max_prompt_tokens: int | None
) -> list[str | None]:
    """Greedy completions, left-padded batches of similar length, stopped at a blank line; None for prompts longer
    than `max_prompt_tokens`."""
    import torch
    from transformers import GenerationConfig

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    order = sorted(
        (i for i in range(len(prompts)) if max_prompt_tokens is None or lengths[i] <= max_prompt_tokens),
        key=lambda i: (-lengths[i], i),
    )
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        stop_strings=[STOP],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id or tokenizer.eos_token_id,
    )
    out: list[str | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            generated = model.generate(**enc, generation_config=config, tokenizer=tokenizer)
        texts = tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(chunk, texts):
            out[i] = text
    return out


def vllm_generator(model_dir: str | Path, tokenizer, dtype: str, batch_size: int, seed: int):
    """Greedy completions through the eval stage's vLLM runner (same engine settings), stopped at a blank line."""
    from menagerie.inference.vllm_lm import VLLMLM  # imports lm_eval: only when vLLM runs

    lm = VLLMLM(Path(model_dir), tokenizer, dtype=dtype, batch_size=batch_size, seed=seed, on_cuda=has_cuda())

    def generate(prompts: list[str], max_new_tokens: int, max_prompt_tokens: int | None) -> list[str | None]:
        keep = [
            i for i, p in enumerate(prompts) if max_prompt_tokens is None or len(lm.tok_encode(p)) <= max_prompt_tokens
        ]
        texts = lm.sample([prompts[i] for i in keep], 1, 0.0, max_new_tokens, [STOP]) if keep else []
        out: list[str | None] = [None] * len(prompts)
        for i, samples in zip(keep, texts):
            out[i] = samples[0]
        return out

    return generate, lm.engine_settings


def predict(name: str, config: dict, tasks_path: str | Path, model_dir: str | Path, out_path: Path) -> dict:
    """Write the base model's predictions on the selected tasks (jsonl, atomically); returns a summary."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    entry = config["datasets"][name]
    ni, inference = entry["ni"], entry["ni"]["inference"]
    stream, selection = select_tasks(tasks_path, ni["selection"], name)  # a missing task list stops here
    dtype = config["models"][entry["model"]].get("dtype", "bfloat16")
    torch.manual_seed(inference["seed"])
    tokenizer = load_tokenizer(model_dir)
    limit = inference["max_prompt_tokens"]
    if inference["backend"] == "vllm":
        generate, engine = vllm_generator(model_dir, tokenizer, dtype, inference["batch_size"], inference["seed"])
        max_positions, device = AutoConfig.from_pretrained(str(model_dir)).max_position_embeddings, "vllm"
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        model.to("cuda" if has_cuda() else "cpu").eval()
        max_positions, device, engine = getattr(model.config, "max_position_embeddings", None), str(model.device), None

        def generate(prompts, max_new_tokens, max_prompt_tokens):
            return greedy_generate(
                model, tokenizer, prompts, max_new_tokens, inference["batch_size"], max_prompt_tokens
            )

    if limit is None and max_positions:
        limit = max_positions - inference["max_new_tokens"]
    counts = {"tasks": 0, "instances": 0, "skipped": 0}
    with atomic_open(out_path, "wb") as handle:
        for task in stream:
            instances = scored_instances(task, inference["max_instances"], inference["seed"])
            prompts = [few_shot_prompt(task, inst["input"], inference["shots"]) for inst in instances]
            texts = generate(prompts, inference["max_new_tokens"], limit)
            for inst, text in zip(instances, texts):
                rec = {
                    "task": task["task_name"],
                    "id": str(inst["id"]),
                    "prediction": clean_prediction(text) if text is not None else None,
                }
                if text is None:
                    rec["skipped"] = f"prompt longer than {limit} tokens"
                handle.write(jsonl_line(rec).encode("utf-8"))
            counts["tasks"] += 1
            counts["instances"] += len(instances)
            counts["skipped"] += sum(1 for t in texts if t is None)
            print(
                f"ni predict {name}: task {counts['tasks']} {task['task_name']}: {len(instances)} instances", flush=True
            )
        if not counts["tasks"]:  # raised inside: no output is left behind
            excluded = {k: len(v) for k, v in selection["excluded"].items()}
            raise MenagerieError(
                f"dataset '{name}': no Natural Instructions task of {tasks_path} passes the "
                f"selection {ni['selection']} (excluded: {excluded})"
            )
    return {
        **counts,
        "device": device,
        "backend": inference["backend"],
        "engine": engine,
        "dtype": dtype,
        "max_prompt_tokens": limit,
        "selection": {
            "selected": selection["selected"],
            "excluded": {k: len(v) for k, v in selection["excluded"].items()},
        },
    }
