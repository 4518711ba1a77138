"""How the ranks of a training job share the model: DDP (a full replica per rank) or FSDP2 (fully sharded).

FSDP goes through transformers' Trainer and accelerate (`fsdp_config` with `version: 2`): full shard, one FSDP unit
per decoder layer (the model's `_no_split_modules`), activation checkpointing when the stage sets
`gradient_checkpointing`, sharded checkpoints (torch.distributed.checkpoint, one file set per rank, resumable), and
a full state dict gathered to rank 0 for the final Hugging Face model directory. Mixed precision under FSDP is
accelerate's MixedPrecisionPolicy (bf16/fp16 compute, fp32 sharded master weights and AdamW state).

accelerate only turns its FSDP plugin on for accelerator backends (its AcceleratorState promotes MULTI_GPU etc. to
FSDP, never MULTI_CPU), although torch's `fully_shard` runs on CPU with gloo. So that the CPU tests and twins run the
code a GPU job runs, `cpu_fsdp()` makes that one promotion for CPU jobs and nothing else: everything after it (model
sharding, optimizer, checkpoint save/load, state-dict gathering) is accelerate's own FSDP2 path.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from menagerie.plan import rank0_loads  # the planner counts host memory by the same rule

STRATEGIES = ("ddp", "fsdp")


def effective_strategy(
    stage: dict, config: dict | None = None, recipe_name: str | None = None, stage_name: str | None = None
) -> str:
    """The stage's `strategy:`, or, when it is null, the planner's choice (menagerie.plan.choose_strategy: ddp when
    a replica fits the declared GPUs, else fsdp); ddp when no config is at hand to plan with."""
    if stage.get("strategy"):
        return stage["strategy"]
    if config is None or recipe_name is None or stage_name is None:
        return "ddp"
    from menagerie.plan import choose_strategy

    return choose_strategy(config, recipe_name, stage_name)


def decoder_layer_classes(model) -> list[str]:
    """The model's decoder-layer class names (transformers' `_no_split_modules`): FSDP's wrap units."""
    names = list(getattr(model, "_no_split_modules", None) or [])
    if not names:
        from menagerie.errors import MenagerieError

        raise MenagerieError(
            f"{type(model).__name__} names no decoder-layer class (_no_split_modules), so FSDP "
            f"cannot choose its wrap units; use `strategy: ddp` for this model"
        )
    return names


def trainer_arguments(stage: dict, model, processes: int, strategy: str) -> dict:
    """TrainingArguments keys for the strategy (FSDP only when more than one process shares the model)."""
    checkpointing = bool(stage.get("gradient_checkpointing"))
    if strategy != "fsdp" or processes < 2:
        return {"gradient_checkpointing": checkpointing}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": decoder_layer_classes(model),
            "reshard_after_forward": True,  # full shard (ZeRO-3): parameters gathered per unit, then freed
            "state_dict_type": "SHARDED_STATE_DICT",  # checkpoints: one shard per rank, resumable
            "activation_checkpointing": checkpointing,
            # rank 0 holds the real weights, the others placeholders (rank0_loads); sharding broadcasts them
            "cpu_ram_efficient_loading": rank0_loads(stage, processes, strategy),
        },
        # FSDP applies activation checkpointing itself; Trainer's would add a redundant all-gather (and it refuses both)
        "gradient_checkpointing": False,
    }


@contextmanager
def cpu_fsdp():
    """Let accelerate's FSDP plugin run on a multi-process CPU (gloo) job, exactly as it runs on GPUs.

    Inside the block, an AcceleratorState built with an FSDP plugin on MULTI_CPU becomes an FSDP state (accelerate
    makes this promotion for every accelerator backend but CPU). Outside a CPU job this does nothing.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init
    try:
        yield
    finally:
        AcceleratorState.__init__ = original


@contextmanager
def rank0_loading(active: bool):
    """While the trainer is built under rank-0 loading: shard DPO's reference as accelerate shards the policy.

    trl's `prepare_fsdp` applies `fully_shard` to the reference's root only and never broadcasts, which would leave
    the other ranks' placeholder reference uninitialised; accelerate's fsdp2_prepare_model wraps its decoder layers and broadcasts rank 0's weights into the shards. The
    reference is frozen first (accelerate upcasts trainable parameters to fp32 under mixed precision). transformers'
    FSDP_CPU_RAM_EFFICIENT_LOADING (set by TrainingArguments) is off meanwhile: a reference trl loads itself (for
    precomputed log-probs) is then read whole on every rank, as before, instead of being replaced by zeros off local
    rank 0 (transformers 5 modeling_utils._move_missing_keys_from_meta_to_device).
    """
    if not active:
        yield
        return
    import trl.trainer.dpo_trainer as dpo_trainer
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    def prepare_reference(model, accelerator):
        model.requires_grad_(False)
        model = fsdp2_prepare_model(accelerator, model)
        model.eval()
        return model

    original, env = dpo_trainer.prepare_fsdp, os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING")
    dpo_trainer.prepare_fsdp = prepare_reference
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    try:
        yield
    finally:
        dpo_trainer.prepare_fsdp = original
        if env is None:
            os.environ.pop("FSDP_CPU_RAM_EFFICIENT_LOADING", None)
        else:
            os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = env


def full_state_dict_for_save(trainer) -> None:
    """Before the final save: gather a full state dict to rank 0 (the Hugging Face model directory).

    Checkpoints during training stay sharded; Trainer.save_model writes nothing under SHARDED_STATE_DICT.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _local_bytes(tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def resident_bytes() -> int:
    """This process's resident host memory now (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rank_memory(trainer, load_resident_bytes: int | None = None) -> list[dict]:
    """Bytes of parameters and optimizer state each rank holds, counted from its live tensors (all ranks call it).

    Under FSDP a rank holds its shard (DTensor local tensors); under DDP or one process, everything. Also the dtypes
    seen, so a record shows fp32 master weights and optimizer state under bf16/fp16 compute.
    """
    import torch

    params = [p for p in trainer.model.parameters()]
    state = trainer.optimizer.state if trainer.optimizer is not None else {}
    opt_tensors = [v for s in state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    mine = {
        "rank": int(os.environ.get("RANK", "0")),
        "parameter_bytes": sum(_local_bytes(p) for p in params),
        "trainable_parameter_bytes": sum(_local_bytes(p) for p in params if p.requires_grad),
        "optimizer_state_bytes": sum(_local_bytes(v) for v in opt_tensors),
        "trainable_parameter_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in params if p.requires_grad}),
        "optimizer_state_dtypes": sorted({str(v.dtype).removeprefix("torch.") for v in opt_tensors}),
        # resident host memory the policy's loading added (rank-0 loading: ~0 off rank 0)
        "load_resident_bytes": load_resident_bytes,
        "peak_rss_bytes": _peak_rss_bytes(),
    }
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        return gathered
    return [mine]
