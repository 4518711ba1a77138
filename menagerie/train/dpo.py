"""Direct preference optimisation with trl's DPOTrainer on prompts rendered in the recipe's chat format."""

from __future__ import annotations

import time
from pathlib import Path

from menagerie import formats
from menagerie.errors import MenagerieError
from menagerie.io import read_jsonl
from menagerie.train import checkpoints, common
from menagerie.train import stage as training_stage


def preference_examples(rows: list[dict], tokenizer, chat_format: str) -> list[dict]:
    """Canonical preference rows -> trl's standard (non-conversational) prompt/chosen/rejected strings."""
    eos = tokenizer.eos_token
    return [
        {
            "prompt": formats.render_prompt(row["messages"], chat_format, eos, tokenizer=tokenizer),
            "chosen": row["chosen"] + eos,
            "rejected": row["rejected"] + eos,
        }
        for row in rows
    ]


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
    deadline = time.time() + 120  # another node's view of a shared filesystem may lag behind rank 0's write
    while current() != expected and time.time() < deadline:
        time.sleep(0.5)
    if current() != expected:
        raise MenagerieError(
            f"{path}: rank 0 wrote other preference rows than this rank holds (the ranks disagree on the training data)"
        )
    return Dataset.from_json(str(path), cache_dir=str(path.parent / "cache"))


def run_dpo(
    recipe_name: str,
    recipe: dict,
    model_dir: Path,
    train_file: Path,
    val_file: Path | None,
    out_dir: Path,
    work_dir: Path,
    config: dict | None = None,
) -> dict:
    from trl import DPOConfig, DPOTrainer

    stage, tokenizer = training_stage.start(recipe, "dpo", model_dir)
    train = preference_examples(read_jsonl(train_file), tokenizer, recipe["chat_format"])
    val = preference_examples(read_jsonl(val_file), tokenizer, recipe["chat_format"]) if val_file else []
    precomputed = stage["reference"] == "precomputed"
    spec = training_stage.TrainingStage(
        name="dpo",
        config_class=DPOConfig,
        trainer_class=DPOTrainer,
        train=train,
        validation=val,
        config_arguments=dict(
            beta=stage["beta"],
            max_length=stage["max_seq_length"],
            # reference: model = a frozen copy held (and sharded like the policy under FSDP) during
            # training; precomputed = its log-probs computed once before training, then freed
            precompute_ref_log_probs=precomputed,
            # the frozen reference trl loads for a full fine-tune: in the compute dtype (no master copy)
            model_init_kwargs={"dtype": common.TORCH_DTYPES[stage["precision"]]} if stage["method"] == "full" else None,
        ),
        datasets=lambda: (
            preference_dataset(train, work_dir, "train", stage),
            preference_dataset(val, work_dir, "validation", stage) if val else None,
        ),
        trainer_arguments={"ref_model": None},
        # under FSDP rank-0 loading the reference (held, or precomputed from) is real on rank 0 only, sharded like
        # the policy; trl broadcasts rank 0's weight hash for the precomputed log-probs' cache
        rank0_models=(
            (lambda placeholder: {"ref_model": common.load_reference_model(model_dir, stage, placeholder=placeholder)})
            if stage["method"] == "full"
            else None
        ),
        # trl frees a reference it loaded itself once the log-probs are precomputed; ours too
        built=(lambda trainer: setattr(trainer, "ref_model", None)) if precomputed else None,
        record={"beta": stage["beta"]},
        card=lambda batch: [
            f"DPO stage of recipe `{recipe_name}` ({stage['method']}, beta {stage['beta']}) on `{model_dir}`.",
            f"{len(train)} preference pairs; reference model: the policy's starting weights "
            f"({'adapter disabled' if stage['method'] != 'full' else 'a frozen copy'}"
            f"{', log-probs precomputed before training' if precomputed else ''}).",
        ],
        finish=final_rewards,
    )
    return training_stage.run_stage(
        spec, recipe_name, recipe, tokenizer, model_dir, train_file, val_file, out_dir, work_dir, config
    )


def final_rewards(trainer, record: dict) -> None:
    """The last logged train reward accuracy and margin (trl's implicit rewards) into the stage's metrics."""
    rewards = [e for e in trainer.state.log_history if "rewards/accuracies" in e]
    if rewards:
        record["metrics"]["final_reward_accuracy"] = rewards[-1]["rewards/accuracies"]
        record["metrics"]["final_reward_margin"] = rewards[-1].get("rewards/margins")
