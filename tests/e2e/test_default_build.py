"""`make run`'s default build at full size, in a scratch copy (opt-in: `make test-default-build`, ~12 min on 2 quiet
cores): tiny-tulu2-dpo trains fully (SFT -> DPO, no merge) and its final model beats the base model on the held-out
problems by more than 2 combined standard errors.

The run goes through scripts/run.py as `make run` starts it, from a fresh copy (GGUF conversion, data, gate, both
training stages, three evaluations, report, leaderboard). Each stage's wall time (its provenance, summed over
attempts) and the load average are printed, not asserted: speed targets live in bench/ and on a quiet machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from workflow_copy import copy_workflow

pytestmark = [pytest.mark.slow, pytest.mark.default_build]
RECIPE = "tiny-tulu2-dpo"


@pytest.mark.timeout(3600)
def test_default_build_trains_fully_and_gains_on_held_out_problems(tmp_path):
    import torch
    from safetensors.torch import load_file

    work = copy_workflow(tmp_path / "project", share_downloads=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    load_before, started = os.getloadavg()[0], time.monotonic()
    run = subprocess.run(
        [sys.executable, "scripts/run.py", "--recipe", RECIPE, "--cores", "2"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=3500,
    )
    wall, load_after = time.monotonic() - started, os.getloadavg()[0]
    logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((work / "logs").rglob("*.log")))
    assert run.returncode == 0, run.stderr[-4000:] + logs

    results = work / "results" / RECIPE
    entry = json.loads((results / "eval.json").read_text())
    stages = entry["provenance"]["wall_time_s"]
    print(
        f"\n{RECIPE}: whole build {wall:.0f} s (load average {load_before:.1f} before, {load_after:.1f} after); "
        "stages: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items())
    )

    # Tulu 2's full fine-tuning, not LoRA: no merge job ran, each stage's directory is the whole model
    assert "rule merge" not in run.stdout + run.stderr and not list(results.glob("*_merged"))
    assert entry["model"]["final"] == f"results/{RECIPE}/dpo" and entry["model"]["start"] == f"results/{RECIPE}/sft"
    start = work / "resources/models/smollm2-135m"
    for stage in ("sft", "dpo"):
        record = json.loads((results / stage / "provenance.json").read_text())
        assert record["method"] == "full" and record["rank_memory"][0]["optimizer_state_dtypes"] == ["float32"]
        before = load_file(str(start / "model.safetensors"))
        after = load_file(str(results / stage / "model.safetensors"))
        assert all(not torch.equal(before[name], after[name]) for name in before), stage  # every tensor trained
        start = results / stage
    losses = [e["loss"] for e in json.loads((results / "sft" / "trainer_log.json").read_text()) if "loss" in e]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # SFT learns its training rows

    # the held-out problems: the final model beats the base model by more than 2 combined standard errors
    held = entry["tasks"]["heldout_exact"]
    print(
        f"heldout_exact: final {held['value']:.1f} ± {held['stderr']:.1f}, base {held['base']['value']:.1f} ± "
        f"{held['base']['stderr']:.1f}, start (SFT) {held['start']['value']:.1f}; gain {held['delta_vs_base']:.1f}, "
        f"z {held['z_vs_base']:.2f}; DPO validation {entry['dpo']['validation']}"
    )
    assert held["status"] == "ok" and held["n"] == 200
    assert held["z_vs_base"] > 2, held
