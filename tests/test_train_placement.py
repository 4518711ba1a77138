"""Where a training stage's base model is loaded: a quantized base on the GPU of its own rank.

The shipped QLoRA / int8 recipes train data-parallel on 8 GPUs (tulu2-qlora-*) or 1 (platypus2-13b, birbal-7b).
Without a device_map, transformers' bitsandbytes loader puts the base on the current CUDA device, which is GPU 0 in
every process of a torchrun launch, and accelerate then refuses to train rank 3's model on GPU 0. The keyword
arguments are checked here; the GPU load itself needs CUDA and runs on a GPU node only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from menagerie.config import load_config  # noqa: E402
from menagerie.train.common import load_kwargs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stages() -> dict:
    recipes = load_config(REPO / "config.yaml")["recipes"]
    return {
        "qlora": recipes["tulu2-qlora-7b"]["stages"]["sft"],
        "int8": recipes["platypus2-13b"]["stages"]["sft"],
        "full": recipes["tulu2-7b"]["stages"]["sft"],
    }


@pytest.mark.parametrize("rank", ["0", "3", "7"])
def test_quantized_base_loads_on_its_own_ranks_gpu(stages, monkeypatch, rank):
    monkeypatch.setenv("LOCAL_RANK", rank)
    monkeypatch.setenv("RANK", str(8 + int(rank)))  # second node: the global rank is not the GPU index
    kwargs = load_kwargs(stages["qlora"])
    assert kwargs["device_map"] == {"": int(rank)}
    assert kwargs["quantization_config"].load_in_4bit
    assert kwargs["quantization_config"].bnb_4bit_quant_type == "nf4"


def test_int8_base_loads_on_its_own_ranks_gpu(stages, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    kwargs = load_kwargs(stages["int8"])
    assert kwargs["device_map"] == {"": 2}
    assert kwargs["quantization_config"].load_in_8bit


def test_single_process_quantized_base_on_gpu_0(stages, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert load_kwargs(stages["qlora"])["device_map"] == {"": 0}


def test_unquantized_weights_load_on_the_host_in_fp32(stages, monkeypatch):
    """Full fine-tuning: fp32 master weights on the host; Trainer (DDP) or FSDP places them, so no device_map."""
    import torch

    monkeypatch.setenv("LOCAL_RANK", "5")
    assert load_kwargs(stages["full"]) == {"dtype": torch.float32}


def test_load_training_model_places_the_quantized_base_fake_gpu_loader(stages, monkeypatch, tmp_path):
    """load_training_model itself, with the two things that need a GPU replaced (CUDA present; the bitsandbytes
    load, which records its arguments): rank 5's base is asked for GPU 5."""
    import transformers
    import peft

    from menagerie.train import common

    seen = {}
    monkeypatch.setattr(common, "has_cuda", lambda: True)
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda path, **kwargs: seen.update(path=path, **kwargs) or "model",
    )
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", lambda model, **kwargs: model)
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert common.load_training_model(tmp_path, stages["qlora"]) == "model"
    assert seen["device_map"] == {"": 5} and seen["quantization_config"].load_in_4bit
