"""Merge a LoRA/QLoRA adapter into a model with peft's merge_and_unload.

The target is the model the adapter was trained on, or (Platypus) a different fine-tune of the same base.
QLoRA adapters (`dequantize_from`: the training stage's 4-bit settings) merge into dequant(quant(W)), the weights the
adapter was trained against, as open-instruct's merge_lora.py --qlora did; that merge runs on the CPU, streaming one
tensor at a time (menagerie/dequantize_merge.py).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from menagerie.io import atomic_directory
from menagerie.dequantize_merge import write_merged
from menagerie.errors import MenagerieError
from menagerie.models import model_card
from menagerie.provenance import file_hashes, stage_record


def load_target(target_dir: Path, dtype: str, dequantize_from: dict | None):
    """The model the adapter is folded into; for QLoRA, the 4-bit base dequantized back to `dtype`.

    Dequantizing (rather than loading the original bf16 weights) merges into exactly the weights the adapter was
    trained against, as open-instruct's merge_lora.py --qlora did. The dequantized base is streamed to a temporary
    checkpoint on the host (menagerie/dequantize_merge.py, CPU, bounded memory) and loaded from there; a single QLoRA
    adapter skips this and streams the merge itself (merge_adapter).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if not dequantize_from:
        return AutoModelForCausalLM.from_pretrained(str(target_dir), dtype=getattr(torch, dtype))
    with tempfile.TemporaryDirectory(prefix="dequantized-") as tmp:
        write_merged(target_dir, Path(tmp), dtype, dequantize_from, dequantize_from["weights_dtype"])
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=getattr(torch, dtype))
        # safetensors memory-maps the files: materialise every tensor before the directory goes
        for param in model.parameters():
            param.data = param.data.clone()
    return model


WEIGHTED = "weighted"


def _check_adapter(adapter_dir: Path) -> None:
    if not (Path(adapter_dir) / "adapter_config.json").exists():
        raise MenagerieError(f"{adapter_dir} holds no adapter_config.json: only LoRA/QLoRA stages can be merged")


def weighted_adapter_model(base, combine: dict):
    """`base` wrapped with every adapter of `combine` and their weighted combination (peft add_weighted_adapter)
    active as adapter "weighted". combine: {method, density, majority_sign_method, adapters: [(dir, weight)]}."""
    from peft import PeftModel

    adapters = combine["adapters"]
    for path, _ in adapters:
        _check_adapter(Path(path))
    names = [f"a{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(base, str(adapters[0][0]), adapter_name=names[0])
    for name, (path, _) in zip(names[1:], adapters[1:]):
        model.load_adapter(str(path), adapter_name=name)
    kwargs = {"density": combine["density"]} if combine.get("density") is not None else {}
    if combine["method"] in ("ties", "dare_ties"):
        kwargs["majority_sign_method"] = combine.get("majority_sign_method") or "total"
    model.add_weighted_adapter(
        names, [float(w) for _, w in adapters], WEIGHTED, combination_type=combine["method"], **kwargs
    )
    model.set_adapter(WEIGHTED)
    return model


def merge_adapter(
    adapter_dir: Path,
    target_dir: Path,
    out_dir: Path,
    dtype: str,
    label: str,
    dequantize_from: dict | None = None,
    combine: dict | None = None,
) -> dict:
    """Fold `adapter_dir` (or, with `combine`, the weighted combination of several adapters) into `target_dir`."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    _check_adapter(adapter_dir)
    adapter_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    # a single QLoRA adapter streams into the dequantized base on the host; everything else merges in memory
    streamed = dequantize_from if not combine else None
    merged = None
    if streamed is None:
        base = load_target(target_dir, dtype, dequantize_from)
        if combine:
            merged = weighted_adapter_model(base, combine).merge_and_unload(adapter_names=[WEIGHTED])
        else:
            merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    # the adapter directory carries the recipe's chat template; the target's tokenizer is otherwise identical
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    with (
        atomic_directory(out_dir) as tmp,
        stage_record(
            "merge",
            tmp,
            adapter=str(adapter_dir),
            target=str(target_dir),
            dtype=dtype,
            dequantized_from=dequantize_from,
            adapter_trained_on=adapter_cfg.get("base_model_name_or_path"),
            combination=_combination_record(combine),
            input_sha256=file_hashes(
                {
                    "adapter": adapter_dir / "adapter_model.safetensors",
                    **{
                        f"adapter_{i}": Path(path) / "adapter_model.safetensors"
                        for i, (path, _) in enumerate((combine or {}).get("adapters", [])[1:], 1)
                    },
                }
            ),
        ) as record,
    ):
        if streamed is not None:
            counts = write_merged(target_dir, tmp, dtype, streamed, streamed["weights_dtype"], adapter_dir=adapter_dir)
            record["streamed"] = {k: counts[k] for k in ("tensors", "quantized", "merged", "shards")}
            record["parameters"] = counts["parameters"]
        elif merged is not None:
            merged.save_pretrained(str(tmp), safe_serialization=True)
            record["parameters"] = sum(p.numel() for p in merged.parameters())
        tokenizer.save_pretrained(str(tmp))
        for extra in ("trainer_log.json", "loss_curve.png"):
            if (adapter_dir / extra).exists():
                (tmp / extra).write_bytes((adapter_dir / extra).read_bytes())
        (tmp / "README.md").write_text(
            model_card(
                label,
                [
                    f"LoRA adapter `{adapter_dir}` (r={adapter_cfg.get('r')}, alpha={adapter_cfg.get('lora_alpha')}, "
                    f"targets {adapter_cfg.get('target_modules')}) merged into `{target_dir}` in {dtype} "
                    + (
                        f"dequantized from its {streamed['quant_type']} 4-bit quantization (the weights the adapter "
                        f"was trained against), on the CPU, one tensor at a time."
                        if streamed is not None
                        else "with peft merge_and_unload."
                    ),
                    f"The adapter was trained on `{adapter_cfg.get('base_model_name_or_path')}`.",
                    *(
                        [
                            f"Weighted merge ({combine['method']}, density {combine.get('density')}) of: "
                            + ", ".join(f"`{path}` x {weight}" for path, weight in combine["adapters"])
                        ]
                        if combine
                        else []
                    ),
                ],
            )
        )
    return record


def _combination_record(combine: dict | None) -> dict | None:
    if not combine:
        return None
    return {
        "method": combine["method"],
        "density": combine.get("density"),
        "adapters": [{"path": str(path), "weight": weight} for path, weight in combine["adapters"]],
    }
