"""Supervised fine-tuning with trl's SFTTrainer: full, LoRA or QLoRA; loss on response tokens only."""

from __future__ import annotations

from pathlib import Path

from menagerie import formats
from menagerie.errors import MenagerieError
from menagerie.io import read_jsonl
from menagerie.train import stage as training_stage


def tokenize_rows(rows: list[dict], tokenizer, stage: dict, chat_format: str) -> list[dict]:
    """Token ids and labels (-100 outside the response) for every row that keeps a trained token."""
    examples = []
    for row in rows:
        example = formats.tokenize_sft(
            row, tokenizer, chat_format, stage["max_seq_length"], loss_on=stage["loss_on"], add_eos=stage["add_eos"]
        )
        if formats.has_trained_tokens(example):
            examples.append(example)
    return examples


def run_sft(
    recipe_name: str,
    recipe: dict,
    model_dir: Path,
    train_file: Path,
    val_file: Path | None,
    out_dir: Path,
    work_dir: Path,
    config: dict | None = None,
) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    stage, tokenizer = training_stage.start(recipe, "sft", model_dir)
    train = tokenize_rows(read_jsonl(train_file), tokenizer, stage, recipe["chat_format"])
    val = tokenize_rows(read_jsonl(val_file), tokenizer, stage, recipe["chat_format"]) if val_file else []
    if not train:
        raise MenagerieError(
            f"{train_file}: no row keeps a response token within max_seq_length {stage['max_seq_length']}"
        )
    spec = training_stage.TrainingStage(
        name="sft",
        config_class=SFTConfig,
        trainer_class=SFTTrainer,
        train=train,
        validation=val,
        config_arguments=dict(
            max_length=stage["max_seq_length"],
            packing=stage["packing"],
            neftune_noise_alpha=stage["neftune_noise_alpha"],
            dataset_num_proc=None,
        ),
        datasets=lambda: (Dataset.from_list(train), Dataset.from_list(val) if val else None),
        card=lambda batch: [
            f"SFT stage of recipe `{recipe_name}` ({stage['method']}) on `{model_dir}`.",
            f"Chat format: {recipe['chat_format']}; {len(train)} training rows, {len(val)} validation rows; "
            f"global batch {batch['global_batch_size']} = {batch['micro_batch_size']} x "
            f"{batch['gradient_accumulation_steps']} accumulation x {batch['processes']} process(es).",
        ],
    )
    return training_stage.run_stage(
        spec, recipe_name, recipe, tokenizer, model_dir, train_file, val_file, out_dir, work_dir, config
    )
