"""Test entry point: `scripts/train.py` with a probe on the trainer (not a test module itself).

Run as `python tests/train_probe.py <train.py arguments>` (or under torchrun). Environment:
  PROBE_BATCHES  append one JSON line per micro-batch {step, rank, sha} (sha256 of its input_ids and labels)
  PROBE_SLEEP    seconds to sleep after every optimizer step (so a test can kill the run mid-way)
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def install_probe() -> None:
    import trl
    from transformers import TrainerCallback

    batches = os.environ.get("PROBE_BATCHES")
    sleep = float(os.environ.get("PROBE_SLEEP", "0"))

    class Sleep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(sleep)

    class ProbedSFTTrainer(trl.SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if sleep:
                self.add_callback(Sleep())

        def training_step(self, model, inputs, *args, **kwargs):
            if batches:
                digest = hashlib.sha256()
                for key in ("input_ids", "labels"):
                    if key in inputs:
                        digest.update(inputs[key].cpu().numpy().tobytes())
                with open(batches, "a") as handle:
                    handle.write(
                        json.dumps(
                            {
                                "step": self.state.global_step + 1,
                                "rank": self.args.process_index,
                                "sha": digest.hexdigest()[:16],
                            }
                        )
                        + "\n"
                    )
            return super().training_step(model, inputs, *args, **kwargs)

    trl.SFTTrainer = ProbedSFTTrainer


if __name__ == "__main__":
    install_probe()
    sys.argv = [str(REPO / "scripts" / "train.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
