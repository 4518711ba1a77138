"""Where this process runs: CUDA or not, and its place in a multi-process (torchrun) launch.

Ground floor: every stage that places a model (training, merging, inference, evaluation) asks here, so no stage
imports another one for it. torch is imported only inside has_cuda (the rest needs none).
"""

from __future__ import annotations

import os


def has_cuda() -> bool:
    import torch   # heavy; only the callers that place a model need it

    return torch.cuda.is_available()


def world_size() -> int:
    """Processes of this launch (torchrun sets WORLD_SIZE; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank in the launch (torchrun sets RANK; 0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch (or the only process): the one that writes the stage's outputs."""
    return rank() == 0
