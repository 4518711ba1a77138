"""Supervised fine-tuning with trl's SFTTrainer: full, LoRA or QLoRA; loss on response tokens only."""

from __future__ import annotations

from pathlib import Path

from menagerie import formats
from menagerie.errors import MenagerieError
from menagerie.formats import load_tokenizer
from menagerie.io import read_jsonl
from menagerie.provenance import file_hashes, stage_record
from menagerie.train import artifacts, checkpoints, common, progress, strategy
from menagerie.train.budget import stage_budget


def tokenize_rows(rows: list[dict], tokenizer, stage: dict, chat_format: str) -> list[dict]:
    """Token ids and labels (-100 outside the response) for every row that keeps a trained token."""
    examples = []
    for row in rows:
        example = formats.tokenize_sft(row, tokenizer, chat_format, stage["max_seq_length"],
                                       loss_on=stage["loss_on"], add_eos=stage["add_eos"])
        if formats.has_trained_tokens(example):
            examples.append(example)
    return examples


def run_sft(recipe_name: str, recipe: dict, model_dir: Path, train_file: Path, val_file: Path | None,
            out_dir: Path, work_dir: Path, config: dict | None = None) -> dict:
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    stage = recipe["stages"]["sft"]
    set_seed(stage["seed"])
    tokenizer = load_tokenizer(model_dir)
    train = tokenize_rows(read_jsonl(train_file), tokenizer, stage, recipe["chat_format"])
    val = tokenize_rows(read_jsonl(val_file), tokenizer, stage, recipe["chat_format"]) if val_file else []
    if not train:
        raise MenagerieError(f"{train_file}: no row keeps a response token within max_seq_length "
                             f"{stage['max_seq_length']}")
    batch = common.derive_batch(stage["global_batch_size"], stage["micro_batch_size"], common.world_size())
    model = common.load_training_model(model_dir, stage)
    sharing = strategy.effective_strategy(stage, config, recipe_name, "sft")
    args = SFTConfig(**common.trainer_arguments(stage, batch, work_dir, has_validation=bool(val))
                     | progress.trainer_options(recipe_name, recipe, "sft")
                     | strategy.trainer_arguments(stage, model, batch["processes"], sharing),
                     max_length=stage["max_seq_length"], packing=stage["packing"],
                     neftune_noise_alpha=stage["neftune_noise_alpha"], dataset_num_proc=None)
    inputs = {"model": model_dir, "train": train_file, **({"validation": val_file} if val_file else {})}
    # hashed once, on rank 0 (8 ranks reading a 140 GB model directory each would be 8x the I/O), then broadcast
    input_sha256 = checkpoints.from_main_process(lambda: file_hashes(inputs), common.is_main_process())
    trajectory = checkpoints.trajectory(stage, recipe["chat_format"], batch, input_sha256,
                                        sharing if batch["processes"] > 1 else None)
    resume = checkpoints.bind_work_dir(work_dir, trajectory, is_main=common.is_main_process())
    budget = stage_budget(recipe, "sft", out_dir, resume, checkpoints.trajectory_hash(trajectory))
    with strategy.cpu_fsdp():
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                             eval_dataset=Dataset.from_list(val) if val else None, processing_class=tokenizer,
                             peft_config=common.lora_config(stage),
                             callbacks=[budget, progress.progress_callback("sft"),
                                        checkpoints.time_callback(stage["save_minutes"])])
    with common.stage_output(out_dir) as tmp, stage_record("sft", tmp, recipe=recipe_name, method=stage["method"],
                                                           batch=batch, input_sha256=input_sha256,
                                                           resumed_from=resume, attempts_dir=work_dir) as record:
        trainer.train(resume_from_checkpoint=resume)
        record["strategy"] = sharing if batch["processes"] > 1 else None
        record["rank_memory"] = strategy.rank_memory(trainer)
        strategy.full_state_dict_for_save(trainer)
        card = [f"SFT stage of recipe `{recipe_name}` ({stage['method']}) on `{model_dir}`.",
                f"Chat format: {recipe['chat_format']}; {len(train)} training rows, {len(val)} validation rows; "
                f"global batch {batch['global_batch_size']} = {batch['micro_batch_size']} x "
                f"{batch['gradient_accumulation_steps']} accumulation x {batch['processes']} process(es)."]
        record["metrics"] = artifacts.save_artifacts(trainer, tokenizer, tmp, formats.chat_template_jinja(
            recipe["chat_format"]), card, f"{recipe_name} / sft", stage=stage, batch=batch)
        record["stopped_for_budget"] = budget.stopped_for_budget
        record["gpu_hours"] = round(budget.used_gpu_hours(), 4) if stage["resources"]["gpus"] else 0.0
        record["rows"] = {"train": len(train), "validation": len(val)}
    return record
