"""Training stages on CPU: effective batch, SFT (LoRA / full), loss masking, keep-best, budget, DPO, merge,
NEFTune, packing, and the QLoRA-without-GPU stop.

Everything runs on a tiny random Llama (hidden 64, 2 layers) and the tiny local BPE from conftest; no hub access.
Recipes come from config.yaml (`tiny-tulu2-dpo`) with a few stage keys shrunk so each run takes seconds. The twin
fine-tunes fully (Tulu 2's method); the LoRA -> merge path is tested on the same recipe with its stages switched to
LoRA (`base_recipe`), full fine-tuning with `method: full`.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from menagerie import formats  # noqa: E402
from menagerie.config import load_config  # noqa: E402
from menagerie.errors import ConfigError, MenagerieError, MissingInputError  # noqa: E402
from menagerie.merge import merge_adapter  # noqa: E402
from tiny_models import build_tiny_llama  # noqa: E402
from menagerie.train import common  # noqa: E402
from menagerie.train.dpo import run_dpo  # noqa: E402
from menagerie.train.sft import run_sft, tokenize_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE_NAME = "tiny-tulu2-dpo"


# ---------------------------------------------------------------------------------------------------------------
# fixtures: config, tiny model, data


# LoRA in place of the twin's full fine-tuning, at the rates the twin used as a LoRA twin (LoRA wants ~10x a full
# fine-tune's rate): the adapter, merge and keep-best tests below train adapters
LORA = {"method": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}}
LORA_RATES = {"sft": 1.0e-3, "dpo": 5.0e-5}


@pytest.fixture(scope="module")
def base_recipe() -> dict:
    recipe = load_config(REPO / "config.yaml")["recipes"][RECIPE_NAME]
    assert recipe["stages"]["sft"]["method"] == recipe["stages"]["dpo"]["method"] == "full"  # the shipped twin
    for stage, rate in LORA_RATES.items():
        recipe["stages"][stage].update(copy.deepcopy(LORA), learning_rate=rate)
    return recipe


def make_recipe(base: dict, sft: dict | None = None, dpo: dict | None = None) -> dict:
    """A deep copy of the recipe with its stages shrunk to seconds on CPU, plus per-test overrides."""
    recipe = copy.deepcopy(base)
    small = dict(
        max_steps=4, max_seq_length=64, global_batch_size=4, micro_batch_size=2, warmup_ratio=0.0, warmup_steps=0
    )
    recipe["stages"]["sft"].update(small, **(sft or {}))
    recipe["stages"]["dpo"].update(small, **(dpo or {}))
    return recipe


@pytest.fixture(scope="module", autouse=True)
def _single_process():
    """derive_batch reads WORLD_SIZE: pin one process whatever the environment says."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WORLD_SIZE", raising=False)
        yield


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, make_tiny_tokenizer) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", make_tiny_tokenizer(add_bos=True))


def _sft_rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 13, (7 * i) % 11
        rows.append(
            {
                "id": f"sum-{i}",
                "source": "test-arith",
                "messages": [
                    {"role": "user", "content": f"What is the sum of {a} and {b}?"},
                    {"role": "assistant", "content": f"The sum of {a} and {b} is {a + b}."},
                ],
            }
        )
    return rows


def _pref_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = i % 9, (5 * i) % 7
        rows.append(
            {
                "id": f"pref-{i}",
                "source": "test-arith",
                "messages": [{"role": "user", "content": f"Compute {a} + {b}."}],
                "chosen": f"{a} + {b} = {a + b}.",
                "rejected": f"{a} + {b} = {a + b + 3}.",
            }
        )
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {
        "sft": _write_jsonl(d / "sft.jsonl", _sft_rows(64)),
        "sft_val": _write_jsonl(d / "sft_val.jsonl", _sft_rows(8, offset=1000)),
        "dpo": _write_jsonl(d / "dpo.jsonl", _pref_rows(32)),
    }


@pytest.fixture(scope="module")
def sft_lora(tmp_path_factory, base_recipe, tiny_model_dir, data_dir) -> dict:
    """One LoRA SFT run shared by the artifact, merge and DPO tests."""
    root = tmp_path_factory.mktemp("sft-lora")
    recipe = make_recipe(base_recipe)
    record = run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], None, root / "sft", root / "work")
    return {"out": root / "sft", "root": root, "record": record, "recipe": recipe}


@pytest.fixture(scope="module")
def sft_merged(tmp_path_factory, sft_lora, tiny_model_dir) -> dict:
    out = tmp_path_factory.mktemp("merged") / "merged"
    record = merge_adapter(sft_lora["out"], tiny_model_dir, out, "float32", "tiny merged")
    return {"out": out, "record": record}


class _StopBeforeTraining(Exception):
    """Raised by the capturing trainer's train() when a test only needs the constructed trainer."""


def capture_sft_trainer(monkeypatch, stop_before_train: bool = False, probe=None) -> list:
    """Replace trl.SFTTrainer (run_sft imports it at call time) with a subclass that records each instance.

    `probe`, a TrainerCallback, is added to the trainer; `stop_before_train` makes train() raise
    _StopBeforeTraining right after the trainer (and its prepared dataset and collator) exists."""
    captured: list = []

    class CapturingSFTTrainer(trl.SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if probe is not None:
                self.add_callback(probe)
            captured.append(self)

        def train(self, *args, **kwargs):
            if stop_before_train:
                raise _StopBeforeTraining
            return super().train(*args, **kwargs)

    monkeypatch.setattr(trl, "SFTTrainer", CapturingSFTTrainer)
    return captured


def _tmp_siblings(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name]


# ---------------------------------------------------------------------------------------------------------------
# 1. effective batch


@pytest.mark.parametrize(
    ("global_batch", "micro", "processes", "expected_micro", "expected_accum"),
    [
        (128, 1, 8, 1, 16),  # Tulu 2: 128 over 8 GPUs, micro 1
        (8, 2, 1, 2, 4),
        (16, 4, 2, 4, 2),
        (12, 8, 1, 6, 2),  # 8 does not divide 12: micro lowered to the largest divisor (6)
        (24, 5, 3, 4, 2),  # 5x3 does not divide 24: micro lowered to 4 (4x3x2 = 24)
        (16, 3, 4, 2, 2),  # 3x4 does not divide 16: micro lowered to 2
        (4, 8, 1, 4, 1),  # a micro batch larger than the global batch is capped at the global batch
    ],
)
def test_derive_batch_realises_the_global_batch(global_batch, micro, processes, expected_micro, expected_accum):
    batch = common.derive_batch(global_batch, micro, processes)
    assert batch == {
        "global_batch_size": global_batch,
        "micro_batch_size": expected_micro,
        "processes": processes,
        "gradient_accumulation_steps": expected_accum,
    }
    assert batch["micro_batch_size"] * batch["processes"] * batch["gradient_accumulation_steps"] == global_batch


@pytest.mark.parametrize(("global_batch", "micro", "processes"), [(7, 1, 2), (7, 4, 2), (16, 4, 3), (8, 8, 16)])
def test_derive_batch_stops_when_processes_cannot_split_the_global_batch(global_batch, micro, processes):
    with pytest.raises(ConfigError) as info:
        common.derive_batch(global_batch, micro, processes)
    assert str(info.value) == (
        f"global_batch_size {global_batch} cannot be split over {processes} processes; "
        f"use a process count that divides it"
    )


# ---------------------------------------------------------------------------------------------------------------
# 2. SFT with LoRA: artifacts


@pytest.mark.slow
def test_sft_lora_writes_a_complete_adapter_directory(sft_lora, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    out = sft_lora["out"]
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "trainer_log.json",
        "loss_curve.png",
        "provenance.json",
    ):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists()  # LoRA saves the adapter, not the full weights
    assert _tmp_siblings(out.parent) == []  # no `.sft.tmp-*` left next to the output
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert "<|assistant|>" in tokenizer.chat_template
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == formats.render_prompt(
        messages, "tulu", tokenizer.eos_token
    )

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stage"] == "sft" and prov["recipe"] == RECIPE_NAME and prov["method"] == "lora"
    assert prov["batch"] == {
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "processes": 1,
        "gradient_accumulation_steps": 2,
    }
    assert prov["metrics"]["global_step"] == 4
    assert prov["stopped_for_budget"] is False
    assert prov["rows"] == {"train": 64, "validation": 0}
    assert set(prov["input_sha256"]) == {"model", "train"}

    log = json.loads((out / "trainer_log.json").read_text())
    losses = [e["loss"] for e in log if "loss" in e]
    assert len(losses) == 4 and all(loss == loss and loss > 0 for loss in losses)  # finite, one per step
    readme = (out / "README.md").read_text()
    assert "global batch 4 = 2 x 2 accumulation x 1 process(es)" in readme

    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 16 and adapter_cfg["lora_alpha"] == 32
    weights = load_file(str(out / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    # all-linear on a 2-layer Llama: q, k, v, o, gate, up, down in each layer (lm_head is excluded by peft)
    assert len(lora_b) == 14
    assert all(v.abs().sum() > 0 for v in lora_b.values())  # B starts at zero: every adapter was trained


def tensorboard_scalars(work_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under work_dir/runs, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for run_dir in sorted({p.parent for p in (work_dir / "runs").rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(run_dir))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return scalars


@pytest.mark.slow
def test_sft_writes_tensorboard_events_with_the_logged_loss_by_default(sft_lora):
    """report_to unset (config.yaml's twin) = TensorBoard under the stage's work dir, the loss of every step in it."""
    assert sft_lora["recipe"].get("report_to") is None
    scalars = tensorboard_scalars(sft_lora["root"] / "work")
    log = json.loads((sft_lora["out"] / "trainer_log.json").read_text())
    logged = [(e["step"], e["loss"]) for e in log if "loss" in e]
    assert [step for step, _ in scalars["train/loss"]] == [step for step, _ in logged] == [1, 2, 3, 4]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert "train/learning_rate" in scalars


@pytest.mark.slow
def test_report_to_none_writes_no_tensorboard_events(tmp_path, base_recipe, tiny_model_dir, data_dir):
    recipe = make_recipe(base_recipe, sft={"max_steps": 1})
    recipe["report_to"] = "none"
    run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], None, tmp_path / "sft", tmp_path / "work")
    assert (tmp_path / "sft" / "provenance.json").is_file() and not (tmp_path / "work" / "runs").exists()


@pytest.mark.slow
def test_sft_lora_adapter_loads_back_and_runs(sft_lora):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(sft_lora["out"]))
    tokenizer = AutoTokenizer.from_pretrained(str(sft_lora["out"]))
    ids = tokenizer("<|user|>\nWhat is the sum of 3 and 4?\n<|assistant|>\n", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------------------------
# 3. loss masking, in the trainer's own dataset and collator


def _expected_trained(row: dict, tokenizer, max_length: int) -> list[bool]:
    """Independent of tokenize_sft: trained = the token's first character lies in a trained segment."""
    segments = formats.render_segments(row, "tulu", tokenizer.eos_token, add_eos=True)
    spans, pos = [], 0
    for text, trained in segments:
        if trained:
            spans.append((pos, pos + len(text)))
        pos += len(text)
    enc = tokenizer("".join(t for t, _ in segments), add_special_tokens=False, return_offsets_mapping=True)
    trained = [False] + [any(a <= s < b for a, b in spans) for s, _ in enc["offset_mapping"]]  # bos first
    return trained[:max_length]


@pytest.mark.slow
def test_sft_labels_mask_prompt_and_padding_in_the_trainer_path(
    monkeypatch, tmp_path, base_recipe, tiny_model_dir, make_tiny_tokenizer
):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = make_tiny_tokenizer(add_bos=True)
    recipe = make_recipe(base_recipe)
    stage = recipe["stages"]["sft"]
    rows = [
        _sft_rows(1)[0],
        {
            "id": "long",
            "source": "t",
            "messages": [
                {"role": "system", "content": "Be careful."},
                {"role": "user", "content": "Explain why the sum of 12 and 30 is 42."},
                {"role": "assistant", "content": "Because 12 + 30 = 42, the sum is 42."},
            ],
        },
    ]
    examples = tokenize_rows(rows, tokenizer, stage, "tulu")
    assert len(examples) == 2 and len(examples[0]["input_ids"]) < len(examples[1]["input_ids"])
    untruncated = tokenize_rows(rows, tokenizer, {**stage, "max_seq_length": 10_000}, "tulu")
    assert untruncated == examples  # both rows fit: the reply and its eos are all there

    # the collator run_sft's trainer uses (captured from a real SFTTrainer built by run_sft)
    train_file = _write_jsonl(tmp_path / "train.jsonl", rows)
    captured = capture_sft_trainer(monkeypatch, stop_before_train=True)
    with pytest.raises(_StopBeforeTraining):
        run_sft(RECIPE_NAME, recipe, tiny_model_dir, train_file, None, tmp_path / "sft", tmp_path / "work")
    assert not (tmp_path / "sft").exists() and _tmp_siblings(tmp_path) == []  # a failed stage leaves nothing
    trainer = captured[0]
    assert type(trainer.data_collator) is DataCollatorForLanguageModeling
    assert trainer.data_collator.padding_free is False
    pad_id = trainer.data_collator.pad_token_id
    assert pad_id == tokenizer.pad_token_id

    # the trainer kept our labels untouched through its dataset preparation
    prepared = sorted(
        (trainer.train_dataset[i] for i in range(len(trainer.train_dataset))), key=lambda e: len(e["input_ids"])
    )
    assert [(e["input_ids"], e["labels"]) for e in prepared] == [(e["input_ids"], e["labels"]) for e in examples]

    for collator in (trainer.data_collator, DataCollatorForLanguageModeling(pad_token_id=pad_id)):
        batch = collator([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        width = batch["input_ids"].shape[1]
        assert width == len(examples[1]["input_ids"])
        for row_index, (row, example) in enumerate(zip(rows, examples)):
            trained = _expected_trained(row, tokenizer, stage["max_seq_length"])
            n = len(example["input_ids"])
            assert len(trained) == n
            assert any(trained) and not all(trained)
            ids, labels = batch["input_ids"][row_index].tolist(), batch["labels"][row_index].tolist()
            mask = batch["attention_mask"][row_index].tolist()
            for position in range(width):
                if position >= n:  # padding
                    assert (ids[position], labels[position], mask[position]) == (pad_id, -100, 0)
                elif trained[position]:  # response (incl. eos)
                    assert labels[position] == ids[position] != -100 and mask[position] == 1
                else:  # prompt, headers, bos, trailing newline
                    assert labels[position] == -100 and mask[position] == 1
            # the eos closing the reply is trained; the response text decodes back from the trained tokens
            trained_ids = [i for i, t in zip(ids, trained) if t]
            assert trained_ids[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(trained_ids[:-1]) == row["messages"][-1]["content"]


# ---------------------------------------------------------------------------------------------------------------
# 4. full fine-tuning


@pytest.mark.slow
def test_full_finetuning_updates_whole_layers_and_saves_a_loadable_model(
    tmp_path, base_recipe, tiny_model_dir, data_dir
):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    recipe = make_recipe(base_recipe, sft={"method": "full", "max_steps": 2, "learning_rate": 1e-3})
    recipe["stages"]["sft"].pop("lora")
    record = run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], None, tmp_path / "sft", tmp_path / "work")
    out = tmp_path / "sft"
    assert record["metrics"]["global_step"] == 2
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()

    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    changed_layers = []
    for layer in (0, 1):
        names = [k for k in before if k.startswith(f"model.layers.{layer}.")]
        assert len(names) == 9  # q k v o gate up down + 2 norms
        if all(not torch.equal(before[k], after[k]) for k in names):
            changed_layers.append(layer)
    assert changed_layers, "no decoder layer had all of its parameters updated"
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])

    model = AutoModelForCausalLM.from_pretrained(str(out))
    with torch.no_grad():
        logits = model(torch.tensor([[1, 40, 41, 42]])).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------------------------
# 5. keep the best checkpoint by validation loss


@pytest.mark.slow
def test_keep_best_records_and_saves_the_lowest_validation_loss_checkpoint(
    tmp_path, base_recipe, tiny_model_dir, data_dir
):
    from safetensors.torch import load_file

    recipe = make_recipe(
        base_recipe, sft={"max_steps": 6, "eval_steps": 2, "save_steps": 2, "keep_best": True, "learning_rate": 3e-2}
    )
    out, work = tmp_path / "sft", tmp_path / "work"
    record = run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], data_dir["sft_val"], out, work)

    log = json.loads((out / "trainer_log.json").read_text())
    evals = [e for e in log if "eval_loss" in e]
    assert [e["step"] for e in evals] == [2, 4, 6]
    best = min(evals, key=lambda e: e["eval_loss"])
    prov = json.loads((out / "provenance.json").read_text())
    metrics = prov["metrics"]
    assert metrics == record["metrics"]
    assert metrics["best_eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-9)
    assert metrics["last_eval_loss"] == pytest.approx(evals[-1]["eval_loss"], rel=1e-9)
    assert Path(metrics["best_checkpoint"]).name == f"checkpoint-{best['step']}"
    assert prov["rows"] == {"train": 64, "validation": 8}
    assert set(prov["input_sha256"]) == {"model", "train", "validation"}

    # the saved adapter is the best checkpoint's, not merely the last step's. With this seed and the high learning
    # rate, validation loss is lowest at step 2 (then rises), so "best" and "last" differ and the check has teeth.
    assert best["step"] < 6
    saved = load_file(str(out / "adapter_model.safetensors"))
    best_weights = load_file(str(Path(metrics["best_checkpoint"]) / "adapter_model.safetensors"))
    last_weights = load_file(str(work / "checkpoint-6" / "adapter_model.safetensors"))
    assert saved.keys() == best_weights.keys()
    assert all(torch.equal(saved[k], best_weights[k]) for k in saved)
    assert not all(torch.equal(saved[k], last_weights[k]) for k in saved)


# ---------------------------------------------------------------------------------------------------------------
# 6. compute budget


@pytest.mark.slow
@pytest.mark.parametrize("with_validation", [False, True], ids=["no-validation", "validation"])
def test_budget_stops_training_after_the_first_step(tmp_path, base_recipe, tiny_model_dir, data_dir, with_validation):
    """The budget callback counts wall time x max(gpus, 1), so it fires on CPU too.

    Without a validation set the stop must not ask for an evaluation (Trainer.evaluate would raise: this was a
    bug); with one (evaluated every 3 steps) the stopping point at step 1 is evaluated as well."""
    recipe = make_recipe(
        base_recipe,
        sft={
            "budget_gpu_hours": 1e-9,
            "max_steps": 4,
            "eval_steps": 3,
            "resources": {**base_recipe["stages"]["sft"]["resources"], "gpus": 1},
        },
    )
    val = data_dir["sft_val"] if with_validation else None
    out = tmp_path / "sft"
    record = run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], val, out, tmp_path / "work")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stopped_for_budget"] is True and record["stopped_for_budget"] is True
    assert prov["metrics"]["global_step"] == 1 < recipe["stages"]["sft"]["max_steps"]
    assert prov["gpu_hours"] >= 0
    assert (out / "adapter_model.safetensors").is_file()
    assert (tmp_path / "work" / "checkpoint-1").is_dir()  # the stop saves a checkpoint to resume from
    log = json.loads((out / "trainer_log.json").read_text())
    assert [e["step"] for e in log if "eval_loss" in e] == ([1] if with_validation else [])


# ---------------------------------------------------------------------------------------------------------------
# 7. DPO on the SFT-merged model


@pytest.mark.slow
def test_dpo_lora_on_the_merged_sft_model(tmp_path, base_recipe, sft_merged, data_dir):
    recipe = make_recipe(base_recipe, dpo={"max_steps": 2})
    out = tmp_path / "dpo"
    record = run_dpo(RECIPE_NAME, recipe, sft_merged["out"], data_dir["dpo"], None, out, tmp_path / "work")
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "trainer_log.json",
        "provenance.json",
        "README.md",
        "loss_curve.png",
    ):
        assert (out / name).is_file(), name
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(sft_merged["out"])
    log = json.loads((out / "trainer_log.json").read_text())
    accuracies = [e["rewards/accuracies"] for e in log if "rewards/accuracies" in e]
    assert len(accuracies) == 2 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert any("rewards/margins" in e for e in log)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stage"] == "dpo" and prov["beta"] == recipe["stages"]["dpo"]["beta"] == record["beta"]
    assert prov["metrics"]["global_step"] == 2
    assert prov["metrics"]["final_reward_accuracy"] == accuracies[-1]
    assert prov["rows"] == {"train": 32, "validation": 0}
    assert _tmp_siblings(tmp_path) == []
    # TensorBoard (the default tracker): the DPO loss and trl's reward metrics of both steps, as logged
    scalars = tensorboard_scalars(tmp_path / "work")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]
    assert [v for _, v in scalars["train/rewards/accuracies"]] == pytest.approx(accuracies, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# 8. merge


@pytest.mark.slow
def test_merge_matches_the_adapter_model_and_writes_a_plain_model(sft_lora, sft_merged, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged_dir = sft_merged["out"]
    assert not (merged_dir / "adapter_config.json").exists()
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
        "provenance.json",
        "trainer_log.json",
        "loss_curve.png",
    ):
        assert (merged_dir / name).is_file(), name
    assert _tmp_siblings(merged_dir.parent) == []
    prov = json.loads((merged_dir / "provenance.json").read_text())
    assert prov["stage"] == "merge" and prov["dtype"] == "float32"
    assert prov["adapter"] == str(sft_lora["out"]) and prov["target"] == str(tiny_model_dir)
    assert prov["adapter_trained_on"] == str(tiny_model_dir)
    assert "tiny merged" in (merged_dir / "README.md").read_text()

    ids = torch.tensor([[1, 30, 31, 32, 33, 34, 35, 36]])
    with torch.no_grad():
        base_logits = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)(ids).logits
        peft_model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32), str(sft_lora["out"])
        )
        peft_logits = peft_model.eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
        merged_logits = merged.eval()(ids).logits
    assert merged.dtype == torch.float32
    assert not torch.allclose(peft_logits, base_logits, atol=1e-3)  # the adapter matters, so the check has teeth
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-4, rtol=0)
    assert prov["parameters"] == sum(p.numel() for p in merged.parameters())


def test_merging_a_directory_without_an_adapter_names_it(tmp_path, tiny_model_dir):
    with pytest.raises(MenagerieError, match=re.escape(str(tiny_model_dir))) as info:
        merge_adapter(tiny_model_dir, tiny_model_dir, tmp_path / "merged", "float32", "label")
    assert "adapter_config.json" in str(info.value)
    assert not (tmp_path / "merged").exists()


# ---------------------------------------------------------------------------------------------------------------
# 9. NEFTune


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [5, None], ids=["alpha-5", "off"])
def test_neftune_alpha_reaches_the_trainer_and_the_embeddings(
    monkeypatch, tmp_path, base_recipe, tiny_model_dir, data_dir, alpha
):
    from transformers import TrainerCallback

    seen: list = []

    class EmbeddingProbe(TrainerCallback):
        """During training, the noise alpha NEFTune attached to the input embeddings (None when inactive)."""

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen.append(getattr(model.get_input_embeddings(), "neftune_noise_alpha", None))

    captured = capture_sft_trainer(monkeypatch, probe=EmbeddingProbe())
    recipe = make_recipe(base_recipe, sft={"neftune_noise_alpha": alpha, "max_steps": 1})
    run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], None, tmp_path / "sft", tmp_path / "work")
    trainer = captured[0]
    assert trainer.args.neftune_noise_alpha == alpha
    assert seen == [alpha]


# ---------------------------------------------------------------------------------------------------------------
# 10. QLoRA on the CPU (bitsandbytes' CPU backend); 8-bit still needs a GPU


@pytest.mark.slow
def test_qlora_trains_on_cpu_with_a_real_nf4_base(monkeypatch, tmp_path, base_recipe, tiny_model_dir, data_dir):
    """The real QLoRA path with no GPU: NF4 Linear4bit base (bitsandbytes CPU backend), prepare_model_for_kbit_training
    (gradient checkpointing, fp32 non-quantized weights), fp32 adapters that train; has_cuda forced False."""
    import bitsandbytes as bnb

    monkeypatch.setattr(common, "has_cuda", lambda: False)
    captured = capture_sft_trainer(monkeypatch)
    recipe = make_recipe(
        base_recipe,
        sft={
            "method": "qlora",
            "precision": "fp32",
            "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"},
        },
    )
    record = run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], None, tmp_path / "sft", tmp_path / "work")
    model = captured[0].model
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 14 and all(m.weight.dtype == torch.uint8 for m in quantized)
    assert model.is_gradient_checkpointing
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and p.dtype == torch.float32 for n, p in trainable.items())
    assert record["metrics"]["global_step"] == 4
    assert record["rank_memory"][0]["trainable_parameter_dtypes"] == ["float32"]
    from safetensors.torch import load_file

    lora_b = [t for k, t in load_file(str(tmp_path / "sft" / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert any(t.abs().max() > 0 for t in lora_b)  # B starts at zero: nonzero means the adapters trained


def test_int8_without_gpu_stops_with_clear_message(monkeypatch, tmp_path, base_recipe, tiny_model_dir, data_dir):
    """LLM.int8 loading (Platypus) still needs CUDA: on CPU the stage stops with one sentence before training.

    has_cuda is forced False so the check also holds on a GPU machine (where int8 itself would run)."""
    monkeypatch.setattr(common, "has_cuda", lambda: False)
    recipe = make_recipe(base_recipe, sft={"quantization": {"bits": 8}})
    with pytest.raises(MissingInputError) as info:
        run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], None, tmp_path / "sft", tmp_path / "work")
    message = str(info.value)
    assert "8-bit" in message and "needs a CUDA GPU" in message and "none is visible" in message
    assert not (tmp_path / "sft").exists() and _tmp_siblings(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------
# 11. packing


@pytest.mark.slow
def test_packing_packs_sequences_and_trains(
    monkeypatch, tmp_path, base_recipe, tiny_model_dir, data_dir, make_tiny_tokenizer
):
    captured = capture_sft_trainer(monkeypatch)
    recipe = make_recipe(base_recipe, sft={"packing": True, "max_steps": 2})
    record = run_sft(RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], None, tmp_path / "sft", tmp_path / "work")
    assert record["metrics"]["global_step"] == 2 and (tmp_path / "sft" / "adapter_model.safetensors").is_file()

    trainer = captured[0]
    dataset = trainer.train_dataset
    assert record["rows"]["train"] == 64
    assert len(dataset) < 64  # rows were packed together
    assert "seq_lengths" in dataset.column_names
    lengths = [sum(s) for s in dataset["seq_lengths"]]
    assert max(lengths) <= 64 and any(len(s) > 1 for s in dataset["seq_lengths"])
    assert sum(len(s) for s in dataset["seq_lengths"]) == 64  # every row kept, none split (bfd)

    # Position ids DO reset per packed sequence: trl's default "bfd" packing strategy switches the collator to
    # padding-free mode, which concatenates the micro batch into one row and rebuilds position_ids from
    # `seq_lengths` (0 at the start of every original sequence). There is no attention_mask; transformers derives
    # a block-diagonal causal mask from the position_ids resets (masking_utils.find_packed_sequence_indices) for
    # sdpa/eager, and flash-attention uses the cu_seq_lens the collator also returns, so packed sequences do not
    # attend to each other. The first token of each sequence (our masked bos) is also forced to label -100.
    assert trainer.data_collator.padding_free is True
    batch = trainer.data_collator([dataset[0], dataset[1]])
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    seq_lengths = dataset[0]["seq_lengths"] + dataset[1]["seq_lengths"]
    expected = torch.cat([torch.arange(n) for n in seq_lengths])
    assert torch.equal(batch["position_ids"][0], expected)
    assert (batch["labels"][0][expected == 0] == -100).all()
    bos = make_tiny_tokenizer(add_bos=True).bos_token_id
    assert (batch["input_ids"][0][expected == 0] == bos).all()  # each packed sequence starts with its own bos
