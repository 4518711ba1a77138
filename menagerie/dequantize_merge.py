"""The QLoRA merge on the CPU: fold a LoRA adapter into the 4-bit base it was trained against, one tensor at a time.

A QLoRA adapter was trained on NF4 weights: each quantized linear layer computed with dequant(quant(W)), where
quant is bitsandbytes' blockwise 4-bit quantization of W as the training stage loaded it (the checkpoint cast to the
stage's precision dtype, then quantized by transformers' bitsandbytes integration). The merged weight is therefore

    W' = dequant(quant(W)) + scale x B @ A        (scale = lora_alpha / r, or alpha / sqrt(r) with rsLoRA)

and not W + scale x B @ A: folding the adapter into the original bf16 weights would give a model training never saw.
This is what open-instruct's merge_lora.py --qlora did for Tulu 2: load the base in 4-bit (nf4, double quant),
replace every bnb Linear4bit with a torch Linear holding `dequantize_4bit(...)` in bf16, on the CPU, then peft's
merge_and_unload there. Its quantization ran on a GPU (bitsandbytes then had no CPU kernels); bitsandbytes 0.50's
CPU backend runs quantize_4bit/dequantize_4bit, so here the whole merge runs on a CPU node.

The merge streams: it reads one checkpoint tensor, quantizes and dequantizes it if transformers would have quantized
it (the decoder's nn.Linear weights, as transformers' own replace_with_bnb_linear decides on a meta-device copy of the
model), adds the adapter's delta (as peft's merge does: B @ A x scale in fp32, added in place, so the sum is rounded once
to the merge dtype) and writes it to the current output shard. Host memory stays bounded by
one output shard plus a few copies of the largest tensor, whatever the model's size (menagerie.plan counts it).
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from menagerie.errors import MenagerieError
from menagerie.plan import MERGE_SHARD_BYTES as SHARD_BYTES  # the buffer the planner counts (host memory)

ADAPTER_PREFIX = "base_model.model."


def _checkpoint_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    raise MenagerieError(
        f"{model_dir} holds no model.safetensors (or index): the QLoRA merge reads safetensors checkpoints only"
    )


def quantized_weight_names(model_dir: Path, quant: dict) -> set[str]:
    """The parameters transformers quantizes when it loads `model_dir` with these 4-bit settings: its own decision
    (replace_with_bnb_linear with the quantizer's modules_to_not_convert), taken on a meta-device copy of the model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations import replace_with_bnb_linear
    from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer

    import bitsandbytes as bnb

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    bnb_config = bnb_4bit_config(quant)
    skip = Bnb4BitHfQuantizer.get_modules_to_not_convert(
        model, bnb_config.llm_int8_skip_modules, getattr(model, "_keep_in_fp32_modules", None)
    )
    replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=bnb_config)
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}


def bnb_4bit_config(quant: dict):
    """transformers' BitsAndBytesConfig for a stage's `quantization:` (bits 4)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant["quant_type"],
        bnb_4bit_use_double_quant=quant["double_quant"],
        bnb_4bit_compute_dtype=getattr(torch, quant["compute_dtype"]),
    )


def nf4_round_trip(weight, quant: dict):
    """dequant(quant(weight)) with bitsandbytes, in weight's dtype: the weight a QLoRA layer computes with."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    packed, state = quantize_4bit(
        weight.contiguous(), compress_statistics=quant["double_quant"], quant_type=quant["quant_type"]
    )
    return dequantize_4bit(packed, quant_state=state, quant_type=quant["quant_type"])


def adapter_deltas(adapter_dir: Path) -> tuple[dict, float]:
    """{target weight name: (A, B)} of a plain LoRA adapter and its scale; anything else is refused in one sentence."""
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    unsupported = [key for key in ("use_dora", "fan_in_fan_out", "lora_bias") if cfg.get(key)]
    unsupported += [key for key in ("rank_pattern", "alpha_pattern", "modules_to_save") if cfg.get(key)]
    if unsupported:
        raise MenagerieError(
            f"{adapter_dir}/adapter_config.json sets {', '.join(unsupported)}: the QLoRA merge folds "
            f"plain LoRA adapters (one r and alpha, no DoRA or saved modules) only"
        )
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    pairs: dict[str, dict] = {}
    for key, tensor in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        stripped = key.removeprefix(ADAPTER_PREFIX)
        for part in ("lora_A", "lora_B"):
            suffix = f".{part}.weight"
            if stripped.endswith(suffix):
                pairs.setdefault(stripped[: -len(suffix)] + ".weight", {})[part] = tensor
                break
        else:
            raise MenagerieError(
                f"{adapter_dir}/adapter_model.safetensors holds '{key}', which is not a LoRA A/B "
                f"matrix: the QLoRA merge folds plain LoRA adapters only"
            )
    broken = [name for name, pair in pairs.items() if len(pair) != 2]
    if broken:
        raise MenagerieError(f"{adapter_dir}/adapter_model.safetensors: {broken[0]} has lora_A or lora_B but not both")
    return {name: (pair["lora_A"], pair["lora_B"]) for name, pair in pairs.items()}, scale


def _plan_shards(sizes: list[tuple[str, int]], limit: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes:
        if shards[-1] and used + size > limit:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def write_merged(
    target_dir: Path,
    out_dir: Path,
    dtype: str,
    quant: dict,
    weights_dtype: str,
    adapter_dir: Path | None = None,
    shard_bytes: int = SHARD_BYTES,
) -> dict:
    """Write target_dir's weights, NF4 round-tripped where QLoRA quantized them and with the adapter folded in, as a
    Hugging Face checkpoint in `dtype` under out_dir (config and safetensors shards; the caller adds the tokenizer).

    `weights_dtype` is the dtype the training stage loaded the base in (its precision): every tensor is cast to it
    first, as loading did, and quantized from it. Returns counts for the provenance record.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoConfig

    target_dir, out_dir = Path(target_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_type, load_type = getattr(torch, dtype), getattr(torch, weights_dtype)
    deltas, scale = adapter_deltas(adapter_dir) if adapter_dir else ({}, 1.0)
    quantized = quantized_weight_names(target_dir, quant)
    files = _checkpoint_files(target_dir)
    where: dict[str, Path] = {}
    sizes: list[tuple[str, int]] = []
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                where[name] = path
                sizes.append((name, math.prod(f.get_slice(name).get_shape()) * out_type.itemsize))
    missing = sorted((set(deltas) | quantized) - set(where))
    if missing:
        raise MenagerieError(
            f"{target_dir}: the checkpoint has no tensor '{missing[0]}', which the adapter or the "
            f"4-bit loading expects (is this the model the adapter was trained on?)"
        )
    shards = _plan_shards(sizes, shard_bytes)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    weight_map = {}
    counts = {"tensors": 0, "quantized": 0, "merged": 0, "shards": len(shards), "parameters": 0}
    with ExitStack() as stack:
        handles: dict[Path, Any] = {}
        for file_name, shard in zip(names, shards):
            buffer = {}
            for name in shard:
                path = where[name]
                if path not in handles:
                    handles[path] = stack.enter_context(safe_open(str(path), framework="pt"))
                tensor = handles[path].get_tensor(name)
                if tensor.is_floating_point():
                    tensor = tensor.to(load_type)
                    if name in quantized:
                        tensor = nf4_round_trip(tensor, quant)
                        counts["quantized"] += 1
                    tensor = tensor.to(out_type)
                    if name in deltas:
                        a, b = deltas[name]
                        # as peft's LoRA Linear.merge: B @ A x scale in fp32 (peft loads adapters in fp32), added
                        # in place, so the sum is computed in fp32 and rounded once to the merge dtype
                        tensor += (b.float() @ a.float()) * scale
                        counts["merged"] += 1
                buffer[name] = tensor.contiguous()
                counts["parameters"] += tensor.numel()
                weight_map[name] = file_name
                counts["tensors"] += 1
            save_file(buffer, str(out_dir / file_name), metadata={"format": "pt"})
            del buffer
    if len(shards) > 1:
        (out_dir / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": sum(size for _, size in sizes)}, "weight_map": weight_map}, indent=2)
            + "\n"
        )
    config = AutoConfig.from_pretrained(str(target_dir))
    config.dtype = out_type
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(out_dir))
    generation = target_dir / "generation_config.json"
    if generation.exists():
        (out_dir / generation.name).write_bytes(generation.read_bytes())
    return counts
