"""Mixed precision: `precision: bf16` trains fp32 master weights with fp32 AdamW state under bf16 compute.

Real SFTTrainer / DPOTrainer steps on CPU (bf16 autocast runs there) on the tiny random Llama, at Tulu 2's DPO
learning rate 5e-7: a bf16 weight near 0.02 moves in steps of ~1e-4, so pure bf16 training would leave the weights
unchanged, while fp32 master weights take every update.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from menagerie.config import load_config  # noqa: E402
from tiny_models import build_tiny_llama  # noqa: E402
from menagerie.train.dpo import run_dpo  # noqa: E402
from menagerie.train.sft import run_sft  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = "tiny-tulu2-dpo"


@pytest.fixture(scope="module", autouse=True)
def _single_process():
    with pytest.MonkeyPatch.context() as mp:
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            mp.delenv(key, raising=False)
        yield


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, make_tiny_tokenizer) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", make_tiny_tokenizer(add_bos=True))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    sft = [
        {
            "id": f"s{i}",
            "source": "t",
            "messages": [
                {"role": "user", "content": f"What is {i % 7} plus {i % 5}?"},
                {"role": "assistant", "content": f"{i % 7} plus {i % 5} is {i % 7 + i % 5}."},
            ],
        }
        for i in range(16)
    ]
    dpo = [
        {
            "id": f"p{i}",
            "source": "t",
            "messages": [{"role": "user", "content": f"Compute {i % 9} + {i % 4}."}],
            "chosen": f"{i % 9 + i % 4}.",
            "rejected": f"{i % 9 + i % 4 + 2}.",
        }
        for i in range(16)
    ]
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    (root / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dpo))
    return {"sft": root / "sft.jsonl", "dpo": root / "dpo.jsonl"}


def recipe(method: str, stage_name: str) -> dict:
    base = copy.deepcopy(load_config(REPO / "config.yaml")["recipes"][RECIPE])
    base["stages"][stage_name].update(
        method=method,
        precision="bf16",
        learning_rate=5.0e-7,
        max_steps=2,
        max_seq_length=48,
        global_batch_size=4,
        micro_batch_size=4,
        warmup_ratio=0.0,
        warmup_steps=0,
        lr_scheduler="constant",
        budget_gpu_hours=None,
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
    )
    if stage_name == "dpo":
        base["stages"]["dpo"]["reference"] = "model"
    return base


@pytest.fixture
def captured(monkeypatch):
    """The trainer a stage builds, kept after train() for inspection (the stage's own code path is unchanged)."""
    seen = {}
    for cls in (trl.SFTTrainer, trl.DPOTrainer):
        original = cls.train

        def train(self, *args, _original=original, **kwargs):
            seen["trainer"] = self
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "train", train)
    return seen


def fraction_changed(before: Path, after: Path) -> float:
    from safetensors.torch import load_file

    old, new = load_file(str(before / "model.safetensors")), load_file(str(after / "model.safetensors"))
    changed = sum(int((new[k].float() != old[k].float()).sum()) for k in old)
    return changed / sum(v.numel() for v in old.values())


def dtypes(tensors) -> set[torch.dtype]:
    return {t.dtype for t in tensors}


def optimizer_state(trainer) -> list:
    return [v for s in trainer.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]


@pytest.mark.parametrize("stage_name", ["sft", "dpo"])
def test_bf16_full_finetune_keeps_fp32_master_weights_and_takes_lr_5e7_updates(
    tmp_path, tiny_model, data, captured, stage_name
):
    run = run_sft if stage_name == "sft" else run_dpo
    run(RECIPE, recipe("full", stage_name), tiny_model, data[stage_name], None, tmp_path / "out", tmp_path / "work")
    trainer = captured["trainer"]
    assert trainer.args.bf16  # bf16 compute (autocast)
    assert dtypes(p for p in trainer.model.parameters() if p.requires_grad) == {torch.float32}
    state = optimizer_state(trainer)
    assert state and dtypes(state) == {torch.float32}  # exp_avg / exp_avg_sq
    if stage_name == "dpo":  # the frozen reference needs no master copy: it is held in the compute dtype
        assert dtypes(trainer.ref_model.parameters()) == {torch.bfloat16}
    # pure bf16 rounds every 5e-7 step away (fraction ~0); fp32 master weights move every weight that gets a
    # gradient (all but the embedding/output rows of the tokenizer's tokens the data never uses)
    assert fraction_changed(tiny_model, tmp_path / "out") > 0.5


def test_lora_on_a_bf16_base_trains_fp32_adapters(tmp_path, tiny_model, data, captured):
    run_sft(RECIPE, recipe("lora", "sft"), tiny_model, data["sft"], None, tmp_path / "out", tmp_path / "work")
    model = captured["trainer"].model
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert trainable and dtypes(trainable) == {torch.float32}  # adapters: fp32 master weights
    assert dtypes(frozen) == {torch.bfloat16}  # the frozen base in the compute dtype
    assert dtypes(optimizer_state(captured["trainer"])) == {torch.float32}
