"""Overhead of a menagerie SFT stage over a minimal plain trl script, on the same model, data and settings.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/sft_overhead.py [--steps 12] [--recipe tiny-tulu2-dpo]

Uses resources/models/smollm2-135m when it exists (else a tiny random Llama), the recipe's SFT stage (method, batch,
sequence length, optimizer...) and the recipe's own generated SFT data (the tiny twin's `tiny-sft` generator), one
set of rows for both runs. Seconds per optimizer step are the median of the step-to-step intervals after `--warmup`
steps; the two scripts alternate `--repeats` times (plain, menagerie, plain, ...) so that drift in machine load hits
both, and the ratio is that of the medians over all repeats (target <= 1.05). Run it when nothing else is running
(it prints the 1-minute load average as a warning sign).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def step_timer():
    """A TrainerCallback recording the wall time at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    return StepTimer()


def step_intervals(times: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])][max(warmup - 1, 0) :]


def rows(n: int, config: dict) -> list[dict]:
    """The tiny twins' generated SFT rows (the dataset `tiny-sft` of config.yaml), as the pipeline trains on."""
    from menagerie.data.generate import generate

    entry = config["datasets"]["tiny-sft"]
    return generate(entry["generator"], n, entry.get("seed", 0), "tulu_messages")


def tiny_random_model(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer_dir = REPO / "resources" / "models" / "smollm2-135m"
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir)) if tokenizer_dir.exists() else None
    if tokenizer is None:
        raise SystemExit("no tokenizer available: build resources/models/smollm2-135m first (make run)")
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
    )
    LlamaForCausalLM(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def run_menagerie(recipe_name, recipe, model_dir, train_file, work: Path) -> list[float]:
    """run_sft exactly as the workflow calls it, with a step timer added to its trainer."""
    import trl

    from menagerie.train.sft import run_sft

    timer = step_timer()
    original = trl.SFTTrainer

    class TimedSFTTrainer(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(timer)

    trl.SFTTrainer = TimedSFTTrainer
    try:
        run_sft(recipe_name, recipe, model_dir, train_file, None, work / "out", work / "ckpt")
    finally:
        trl.SFTTrainer = original
    return timer.times


def run_plain(stage, model_dir, examples, work: Path) -> list[float]:
    """The minimal script a user would write: SFTTrainer + LoraConfig with the same settings, nothing else."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(stage["seed"])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(work),
        per_device_train_batch_size=stage["micro_batch_size"],
        gradient_accumulation_steps=stage["global_batch_size"] // stage["micro_batch_size"],
        learning_rate=stage["learning_rate"],
        max_steps=stage["max_steps"],
        logging_steps=1,
        lr_scheduler_type=stage["lr_scheduler"],
        report_to=[],
        save_strategy="no",
        seed=stage["seed"],
        data_seed=stage["seed"],  # the same batch order as the stage, so both see the same lengths
        max_length=stage["max_seq_length"],
        packing=stage["packing"],
        use_cpu=True,
        optim="adamw_torch",
        disable_tqdm=True,
        # the recipe's precision, stated: trl's SFTConfig defaults to bf16=True, which on a CPU without
        # bf16 units falls back to a scalar GEMM (~20x slower steps; the bench's first version did this)
        bf16=stage["precision"] == "bf16",
        fp16=stage["precision"] == "fp16",
    )
    timer = step_timer()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=[timer],
        peft_config=None
        if stage["method"] == "full"
        else LoraConfig(
            r=stage["lora"]["r"],
            lora_alpha=stage["lora"]["alpha"],
            lora_dropout=stage["lora"]["dropout"],
            target_modules=stage["lora"]["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )  # the default twin trains full, the Platypus/Birbal twins LoRA
    trainer.train()
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="tiny-tulu2-dpo")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--order", choices=["plain-first", "menagerie-first"], default="plain-first")
    args = parser.parse_args()

    import torch

    from menagerie.config import load_config
    from menagerie.train.sft import load_tokenizer, tokenize_rows

    config = load_config(REPO / "config.yaml")
    recipe = config["recipes"][args.recipe]
    stage = recipe["stages"]["sft"]
    stage.update(
        max_steps=args.steps,
        save_steps=10**6,
        eval_steps=None,
        keep_best=False,
        warmup_steps=0,
        warmup_ratio=0.0,
        budget_gpu_hours=None,
        optimizer="adamw_torch",
    )
    with tempfile.TemporaryDirectory(prefix="sft-overhead-") as tmp:
        tmp = Path(tmp)
        model_dir = REPO / "resources" / "models" / "smollm2-135m"
        model_kind = "smollm2-135m"
        if not (model_dir / "config.json").exists():
            model_dir, model_kind = tiny_random_model(tmp / "tiny"), "tiny random Llama"
        train_file = tmp / "train.jsonl"
        data = rows(args.rows, config)
        train_file.write_text("".join(json.dumps(r) + "\n" for r in data))
        examples = tokenize_rows(data, load_tokenizer(model_dir), stage, recipe["chat_format"])
        intervals: dict[str, list[float]] = {"plain": [], "menagerie": []}
        order = ["plain", "menagerie"] if args.order == "plain-first" else ["menagerie", "plain"]
        for repeat in range(args.repeats):
            for which in order:
                work = tmp / f"{which}-{repeat}"
                times = (
                    run_plain(stage, model_dir, examples, work)
                    if which == "plain"
                    else run_menagerie(args.recipe, recipe, model_dir, train_file, work)
                )
                intervals[which] += step_intervals(times, args.warmup)
    per_step = {k: statistics.median(v) for k, v in intervals.items()}
    ratio = per_step["menagerie"] / per_step["plain"]
    result = {
        "model": model_kind,
        "recipe": args.recipe,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "intervals_per_script": len(intervals["plain"]),
        "global_batch": stage["global_batch_size"],
        "micro_batch": stage["micro_batch_size"],
        "max_seq_length": stage["max_seq_length"],
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "plain_s_per_step": round(per_step["plain"], 4),
        "menagerie_s_per_step": round(per_step["menagerie"], 4),
        "ratio": round(ratio, 4),
        "target": 1.05,
        "within_target": ratio <= 1.05,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
