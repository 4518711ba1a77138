"""What SFT and DPO share: effective batch, model loading (full / LoRA / QLoRA), arguments, checkpoints, budget."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from menagerie.device import PRECISION_DTYPES, derive_batch, has_cuda, is_main_process, local_rank, world_size  # noqa: F401
from menagerie.io import atomic_directory
from menagerie.errors import MissingInputError
from menagerie.train.budget import BUDGET_FILE, budget_callback, used_gpu_hours_at  # noqa: F401 (moved there)
from menagerie.train import checkpoints

TORCH_DTYPES = PRECISION_DTYPES  # a stage precision -> torch dtype name (menagerie.device)


@contextmanager
def stage_output(out_dir: Path):
    """Where a stage writes its artifacts: the atomic output directory on rank 0, a throwaway one on other ranks.

    Every rank runs the training loop; only rank 0's artifacts (and provenance) become the stage's output, so the
    processes of a multi-GPU launch never race to replace the same directory.
    """
    if is_main_process():
        with atomic_directory(out_dir) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix=f"rank{os.environ.get('RANK')}-") as tmp:
            yield Path(tmp)


def master_dtype(stage: dict):
    """dtype the model is loaded in: fp32 when its weights train (full), the compute dtype for a frozen LoRA base."""
    import torch

    if stage["method"] == "full":
        return torch.float32
    return getattr(torch, TORCH_DTYPES[stage["precision"]])


def load_kwargs(stage: dict) -> dict:
    """from_pretrained keyword arguments of the model a stage trains (see load_training_model).

    A quantized (bitsandbytes) base is placed at load time, on this process's own GPU: without a device_map
    transformers puts it on the current CUDA device, GPU 0 for every rank of a torchrun launch (nothing selected a
    device yet), so 8 ranks would quantize 8 bases onto GPU 0 and accelerate refuses to train a quantized model on
    another device than its rank's. [OI] finetune.py (`device_map={"": accelerator.local_process_index}`, "force
    data-parallel training") and [PLc] finetune.py (`{"": LOCAL_RANK}` under DDP) do the same. Unquantized weights
    load on the host and Trainer / FSDP place them.
    """
    import torch

    kwargs: dict = {"dtype": master_dtype(stage)}
    quant = stage.get("quantization")
    if quant:
        from transformers import BitsAndBytesConfig

        if quant["bits"] == 4:  # bitsandbytes' CPU backend quantizes and computes NF4 too
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=quant["quant_type"],
                bnb_4bit_use_double_quant=quant["double_quant"],
                bnb_4bit_compute_dtype=getattr(torch, quant["compute_dtype"]),
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": local_rank()}
    return kwargs


def empty_model(model_dir: str | Path, dtype):
    """The model's architecture with uninitialised parameters that occupy no host memory, buffers real.

    What every rank but 0 builds under FSDP rank-0 loading (strategy.rank0_loads): accelerate's fsdp2_prepare_model
    (cpu_ram_efficient_loading) moves the model to the meta device, shards it and broadcasts rank 0's real weights
    into the shards, so a 70B fp32 model occupies the host once per job instead of once per process. The parameters
    are `torch.empty` host tensors, as accelerate expects of the other ranks ("non-main ranks only have
    torch.empty"): never written, their pages are never committed (no resident memory), and unlike meta tensors each
    has its own data_ptr, which accelerate's FSDP2 optimizer remapping (Accelerator._prepare_fsdp2) keys on.
    Non-persistent buffers (rotary inv_freq) are computed for real: accelerate re-registers each rank's own copy.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir))
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    placeholders: dict[int, torch.nn.Parameter] = {}  # by identity: tied parameters stay one tensor
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.device.type == "meta":
                if id(param) not in placeholders:
                    empty = torch.empty(param.shape, dtype=param.dtype, device="cpu")
                    placeholders[id(param)] = torch.nn.Parameter(empty, requires_grad=param.requires_grad)
                module._parameters[name] = placeholders[id(param)]
    model.tie_weights()  # as from_pretrained does (SmolLM2 ties its LM head to the embeddings); accelerate maps by name
    model.config._name_or_path = str(model_dir)
    return model


def load_training_model(model_dir: str | Path, stage: dict, placeholder: bool = False):
    """Load the model a stage trains: full weights, or a (quantized) base with a fresh LoRA adapter config.

    Mixed precision: weights that train are fp32 master weights (with AdamW state in fp32 beside them) and
    `precision: bf16|fp16` is the compute dtype only (Trainer's autocast, or FSDP's mixed-precision policy). A full
    fine-tune therefore loads fp32; a LoRA base is frozen, so it loads in the compute dtype (its adapters are created
    fp32 by peft's autocast_adapter_dtype). Pure bf16 training would round lr-5e-7 updates away entirely.
    """
    from transformers import AutoModelForCausalLM

    if placeholder:
        return empty_model(model_dir, master_dtype(stage))
    quant = stage.get("quantization")
    kwargs = load_kwargs(stage)
    if quant and not has_cuda():
        if quant["bits"] == 8:
            raise MissingInputError(
                "8-bit loading of the base model (bitsandbytes LLM.int8) needs a CUDA GPU and none is visible; run "
                "this stage on a GPU node, or use `method: lora` without `quantization` on CPU as the tiny twins do"
            )
        kwargs["device_map"] = {"": "cpu"}  # NF4 on bitsandbytes' CPU backend
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if quant:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model


def load_reference_model(model_dir: str | Path, stage: dict, placeholder: bool = False):
    """DPO's frozen reference for a full fine-tune, in the compute dtype (no master copy); empty off rank 0."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, TORCH_DTYPES[stage["precision"]])
    if placeholder:
        model = empty_model(model_dir, dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    return model.requires_grad_(False).eval()


def fp32_trainable(model) -> None:
    """Cast the trainable parameters (LoRA adapters) to fp32 master weights.

    trl's SFTTrainer casts a quantized model's adapters to bf16 when it builds them (trl 1.16, citing the QLoRA
    paper); open-instruct and Platypus trained QLoRA/int8 adapters in fp32, and bf16 adapters would round small updates
    away (issue 12), so a k-bit stage casts them back before the optimizer is created.
    """
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)


def lora_config(stage: dict):
    if stage["method"] == "full":
        return None
    from peft import LoraConfig

    lora = stage["lora"]
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
    )


def trainer_arguments(stage: dict, batch: dict, work_dir: Path, has_validation: bool) -> dict:
    """Keyword arguments shared by SFTConfig and DPOConfig, straight from the recipe stage."""
    keep_best = stage["keep_best"] and has_validation
    eval_steps = stage["eval_steps"] if has_validation else None
    save_steps = checkpoints.save_steps(stage, eval_steps)
    args = dict(
        output_dir=str(work_dir),
        seed=stage["seed"],
        data_seed=stage["seed"],
        per_device_train_batch_size=batch["micro_batch_size"],
        per_device_eval_batch_size=batch["micro_batch_size"],
        gradient_accumulation_steps=batch["gradient_accumulation_steps"],
        learning_rate=stage["learning_rate"],
        num_train_epochs=stage["epochs"],
        max_steps=stage["max_steps"] or -1,
        # transformers 5: warmup_steps < 1 is a ratio of the total steps (warmup_ratio was folded into it)
        warmup_steps=stage["warmup_steps"] or stage["warmup_ratio"],
        lr_scheduler_type=stage["lr_scheduler"],
        weight_decay=stage["weight_decay"],
        max_grad_norm=stage["max_grad_norm"],
        optim=stage["optimizer"] if has_cuda() or "paged" not in stage["optimizer"] else "adamw_torch",
        bf16=stage["precision"] == "bf16",
        fp16=stage["precision"] == "fp16",
        logging_steps=1,
        report_to=[],
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss" if keep_best else None,
        greater_is_better=False if keep_best else None,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not has_cuda(),
        # the other ranks wait for rank 0's hashing and stale-checkpoint removal inside a collective
        ddp_timeout=checkpoints.RANK0_WAIT_S,
    )
    return args
