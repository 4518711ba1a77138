"""Where this process runs: CUDA or not, its place in a multi-process (torchrun) launch, and the batch split over it.

Ground floor: every stage that places a model (training, merging, inference, evaluation) asks here, so no stage
imports another one for it. torch is imported only inside has_cuda (the rest needs none).
"""

from __future__ import annotations

import os

from menagerie.errors import ConfigError

# the one home of dtype names: a stage's `precision` -> torch dtype name, and bytes per element of each
PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}


def torch_dtype(name: str):
    """The torch dtype of a precision (`bf16`) or a dtype name (`bfloat16`)."""
    import torch  # heavy; only the callers that place a model need it

    return getattr(torch, PRECISION_DTYPES.get(name, name))


def has_cuda() -> bool:
    import torch  # heavy; only the callers that place a model need it

    return torch.cuda.is_available()


def world_size() -> int:
    """Processes of this launch (torchrun sets WORLD_SIZE; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank in the launch (torchrun sets RANK; 0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's GPU on its node (torchrun sets LOCAL_RANK; 0 for a single process)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch (or the only process): the one that writes the stage's outputs."""
    return rank() == 0


def derive_batch(global_batch: int, micro_batch: int, processes: int) -> dict:
    """Per-device batch and gradient accumulation that realise the recipe's global batch on `processes` devices.

    The global batch is a recipe fact; the GPU count is not. If micro x processes does not divide the global batch,
    the micro batch is lowered to the largest divisor that does, and failing that the stage stops.
    """
    for micro in range(min(micro_batch, global_batch), 0, -1):
        if global_batch % (micro * processes) == 0:
            accumulation = global_batch // (micro * processes)
            return {
                "global_batch_size": global_batch,
                "micro_batch_size": micro,
                "processes": processes,
                "gradient_accumulation_steps": accumulation,
            }
    raise ConfigError(
        f"global_batch_size {global_batch} cannot be split over {processes} processes; use a process "
        f"count that divides it"
    )
