"""The body every training stage shares: batch split, model, strategy, trainer, resume, save, card, provenance.

A stage (sft.py, dpo.py) prepares its rows and supplies only what differs — its trl config and trainer classes and
their own keys, its datasets, the opening lines of its card, extra provenance fields and metrics — as a
`TrainingStage`; `run_stage` does the rest the same way for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from menagerie import formats
from menagerie.provenance import file_hashes, stage_record
from menagerie.train import artifacts, checkpoints, common, progress, strategy
from menagerie.train.budget import stage_budget


def start(recipe: dict, name: str, model_dir: Path) -> tuple[dict, Any]:
    """A stage's settings and tokenizer, after seeding every RNG with the stage's seed (before anything is built)."""
    from transformers import set_seed

    stage = recipe["stages"][name]
    set_seed(stage["seed"])
    return stage, formats.load_tokenizer(model_dir)


@dataclass
class TrainingStage:
    """What one stage supplies to `run_stage`."""

    name: str  # "sft" | "dpo": the stage key, progress and provenance name
    config_class: type  # trl's SFTConfig / DPOConfig
    trainer_class: type  # trl's SFTTrainer / DPOTrainer
    config_arguments: dict  # the config keys only this stage sets
    train: list[dict]  # the prepared rows (their count goes in the card and provenance)
    validation: list[dict]
    datasets: Callable[[], tuple[Any, Any]]  # -> (train dataset, eval dataset or None), built by the trainer call
    card: Callable[[dict], list[str]]  # batch -> the model card's opening lines
    record: dict = field(default_factory=dict)  # extra provenance fields (DPO: beta)
    trainer_arguments: dict = field(default_factory=dict)  # extra trainer keys (DPO: ref_model=None)
    # under FSDP rank-0 loading: placeholder -> the trainer keys that carry a model of its own (DPO's reference)
    rank0_models: Callable[[bool], dict] | None = None
    built: Callable[[Any], None] | None = None  # trainer -> None, right after it is built under rank-0 loading
    finish: Callable[[Any, dict], None] | None = None  # (trainer, record) after the artifacts are saved


def run_stage(
    spec: TrainingStage,
    recipe_name: str,
    recipe: dict,
    tokenizer,
    model_dir: Path,
    train_file: Path,
    val_file: Path | None,
    out_dir: Path,
    work_dir: Path,
    config: dict | None = None,
) -> dict:
    """Train `spec` on model_dir, resuming this trajectory's newest checkpoint under work_dir, and publish the weights
    or adapter with the tokenizer, log, loss curve, card and provenance in out_dir; returns the provenance record."""
    stage = recipe["stages"][spec.name]
    has_validation = bool(spec.validation)
    batch = common.derive_batch(stage["global_batch_size"], stage["micro_batch_size"], common.world_size())
    sharing = strategy.effective_strategy(stage, config, recipe_name, spec.name)
    rank0_loads = strategy.rank0_loads(stage, batch["processes"], sharing)
    placeholder = rank0_loads and not common.is_main_process()
    before = strategy.resident_bytes()
    model = common.load_training_model(model_dir, stage, placeholder=placeholder)
    loaded_bytes = strategy.resident_bytes() - before
    trainer_arguments = dict(spec.trainer_arguments)
    if rank0_loads and spec.rank0_models:
        trainer_arguments |= spec.rank0_models(placeholder)
    args = spec.config_class(
        **common.trainer_arguments(stage, batch, work_dir, has_validation=has_validation)
        | progress.trainer_options(recipe_name, recipe, spec.name)
        | strategy.trainer_arguments(stage, model, batch["processes"], sharing),
        **spec.config_arguments,
    )
    inputs: dict[str, str | Path] = {
        "model": model_dir,
        "train": train_file,
        **({"validation": val_file} if val_file else {}),
    }
    # hashed once, on rank 0 (8 ranks reading a 140 GB model directory each would be 8x the I/O), then broadcast
    input_sha256 = checkpoints.from_main_process(lambda: file_hashes(inputs), common.is_main_process())
    in_effect = sharing if batch["processes"] > 1 else None
    trajectory = checkpoints.trajectory(stage, recipe["chat_format"], batch, input_sha256, in_effect)
    resume = checkpoints.bind_work_dir(work_dir, trajectory, is_main=common.is_main_process())
    budget = stage_budget(recipe, spec.name, out_dir, resume, checkpoints.trajectory_hash(trajectory))
    with strategy.cpu_fsdp(), strategy.rank0_loading(rank0_loads):
        train_dataset, eval_dataset = spec.datasets()
        trainer = spec.trainer_class(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=common.lora_config(stage),
            callbacks=[budget, progress.progress_callback(spec.name), checkpoints.time_callback(stage["save_minutes"])],
            **trainer_arguments,
        )
    if rank0_loads and spec.built:
        spec.built(trainer)
    if stage.get("quantization"):
        common.fp32_trainable(trainer.model)
    with (
        common.stage_output(out_dir) as tmp,
        stage_record(
            spec.name,
            tmp,
            recipe=recipe_name,
            method=stage["method"],
            **spec.record,
            batch=batch,
            input_sha256=input_sha256,
            resumed_from=resume,
            attempts_dir=work_dir,
        ) as record,
    ):
        trainer.train(resume_from_checkpoint=resume)
        record["strategy"] = in_effect
        record["rank_memory"] = strategy.rank_memory(trainer, loaded_bytes)
        record["rank0_loading"] = rank0_loads
        strategy.full_state_dict_for_save(trainer)
        record["metrics"] = artifacts.save_artifacts(
            trainer,
            tokenizer,
            tmp,
            formats.chat_template_jinja(recipe["chat_format"]),
            spec.card(batch),
            f"{recipe_name} / {spec.name}",
            stage=stage,
            batch=batch,
        )
        if spec.finish:
            spec.finish(trainer, record)
        record["stopped_for_budget"] = budget.stopped_for_budget
        record["gpu_hours"] = round(budget.used_gpu_hours(), 4) if stage["resources"]["gpus"] else 0.0
        record["rows"] = {"train": len(spec.train), "validation": len(spec.validation)}
    return record
