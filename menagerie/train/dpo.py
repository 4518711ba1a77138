"""Direct preference optimisation with trl's DPOTrainer on prompts rendered in the recipe's chat format."""

from __future__ import annotations

import time
from pathlib import Path

from menagerie import formats
from menagerie.errors import MenagerieError
from menagerie.provenance import file_hashes, stage_record
from menagerie.io import read_jsonl
from menagerie.train import artifacts, checkpoints, common, progress, strategy
from menagerie.train.budget import stage_budget
from menagerie.train.sft import load_tokenizer


def preference_examples(rows: list[dict], tokenizer, chat_format: str) -> list[dict]:
    """Canonical preference rows -> trl's standard (non-conversational) prompt/chosen/rejected strings."""
    eos = tokenizer.eos_token
    return [{"prompt": formats.render_prompt(row["messages"], chat_format, eos, tokenizer=tokenizer),
             "chosen": row["chosen"] + eos, "rejected": row["rejected"] + eos} for row in rows]


def preference_dataset(rows: list[dict], work_dir: Path, name: str, stage: dict):
    """The rows as a datasets.Dataset; file-backed under work_dir when reference log-probs are precomputed.

    trl caches the precomputed log-probs next to the dataset's files and every rank reads rank 0's cache file: an
    in-memory dataset's cache lives in a per-process temporary directory, which the other ranks cannot see.
    """
    from datasets import Dataset

    if stage["reference"] != "precomputed":
        return Dataset.from_list(rows)
    from menagerie.io import jsonl_line, write_jsonl

    path = Path(work_dir) / "datasets" / f"{name}.jsonl"
    expected = "".join(jsonl_line(row) for row in rows).encode("utf-8")
    current = lambda: path.read_bytes() if path.is_file() else None  # noqa: E731
    def write() -> bool:
        if current() != expected:
            write_jsonl(rows, path)
        return True

    # rank 0 writes (atomically); the others wait in the broadcast (checkpoints.RANK0_WAIT_S), then check the bytes
    checkpoints.from_main_process(write, common.is_main_process())
    deadline = time.time() + 120   # another node's view of a shared filesystem may lag behind rank 0's write
    while current() != expected and time.time() < deadline:
        time.sleep(0.5)
    if current() != expected:
        raise MenagerieError(f"{path}: rank 0 wrote other preference rows than this rank holds (the ranks disagree "
                             "on the training data)")
    return Dataset.from_json(str(path), cache_dir=str(path.parent / "cache"))


def run_dpo(recipe_name: str, recipe: dict, model_dir: Path, train_file: Path, val_file: Path | None,
            out_dir: Path, work_dir: Path, config: dict | None = None) -> dict:
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    stage = recipe["stages"]["dpo"]
    set_seed(stage["seed"])
    tokenizer = load_tokenizer(model_dir)
    train = preference_examples(read_jsonl(train_file), tokenizer, recipe["chat_format"])
    val = preference_examples(read_jsonl(val_file), tokenizer, recipe["chat_format"]) if val_file else []
    batch = common.derive_batch(stage["global_batch_size"], stage["micro_batch_size"], common.world_size())
    model = common.load_training_model(model_dir, stage)
    sharing = strategy.effective_strategy(stage, config, recipe_name, "dpo")
    args = DPOConfig(**common.trainer_arguments(stage, batch, work_dir, has_validation=bool(val))
                     | progress.trainer_options(recipe_name, recipe, "dpo")
                     | strategy.trainer_arguments(stage, model, batch["processes"], sharing),
                     beta=stage["beta"], max_length=stage["max_seq_length"],
                     # reference: model = a frozen copy held (and sharded like the policy under FSDP) during
                     # training; precomputed = its log-probs computed once before training, then freed
                     precompute_ref_log_probs=stage["reference"] == "precomputed",
                     # the frozen reference trl loads for a full fine-tune: in the compute dtype (no master copy)
                     model_init_kwargs={"dtype": common.TORCH_DTYPES[stage["precision"]]}
                     if stage["method"] == "full" else None)
    inputs = {"model": model_dir, "train": train_file, **({"validation": val_file} if val_file else {})}
    # hashed once, on rank 0 (8 ranks reading a 140 GB model directory each would be 8x the I/O), then broadcast
    input_sha256 = checkpoints.from_main_process(lambda: file_hashes(inputs), common.is_main_process())
    trajectory = checkpoints.trajectory(stage, recipe["chat_format"], batch, input_sha256,
                                        sharing if batch["processes"] > 1 else None)
    resume = checkpoints.bind_work_dir(work_dir, trajectory, is_main=common.is_main_process())
    budget = stage_budget(recipe, "dpo", out_dir, resume, checkpoints.trajectory_hash(trajectory))
    with strategy.cpu_fsdp():
        trainer = DPOTrainer(model=model, ref_model=None, args=args,
                             train_dataset=preference_dataset(train, work_dir, "train", stage),
                             eval_dataset=preference_dataset(val, work_dir, "validation", stage) if val else None,
                             processing_class=tokenizer, peft_config=common.lora_config(stage),
                             callbacks=[budget, progress.progress_callback("dpo"),
                                        checkpoints.time_callback(stage["save_minutes"])])
    with common.stage_output(out_dir) as tmp, stage_record("dpo", tmp, recipe=recipe_name, method=stage["method"],
                                                           beta=stage["beta"], batch=batch,
                                                           input_sha256=input_sha256,
                                                           resumed_from=resume, attempts_dir=work_dir) as record:
        trainer.train(resume_from_checkpoint=resume)
        record["strategy"] = sharing if batch["processes"] > 1 else None
        record["rank_memory"] = strategy.rank_memory(trainer)
        strategy.full_state_dict_for_save(trainer)
        card = [f"DPO stage of recipe `{recipe_name}` ({stage['method']}, beta {stage['beta']}) on `{model_dir}`.",
                f"{len(train)} preference pairs; reference model: the policy's starting weights "
                f"({'adapter disabled' if stage['method'] != 'full' else 'a frozen copy'}"
                f"{', log-probs precomputed before training' if stage['reference'] == 'precomputed' else ''})."]
        record["metrics"] = artifacts.save_artifacts(trainer, tokenizer, tmp, formats.chat_template_jinja(
            recipe["chat_format"]), card, f"{recipe_name} / dpo", stage=stage, batch=batch)
        rewards = [e for e in trainer.state.log_history if "rewards/accuracies" in e]
        if rewards:
            record["metrics"]["final_reward_accuracy"] = rewards[-1]["rewards/accuracies"]
            record["metrics"]["final_reward_margin"] = rewards[-1].get("rewards/margins")
        record["rows"] = {"train": len(train), "validation": len(val)}
        record["stopped_for_budget"] = budget.stopped_for_budget
        record["gpu_hours"] = round(budget.used_gpu_hours(), 4) if stage["resources"]["gpus"] else 0.0
    return record
