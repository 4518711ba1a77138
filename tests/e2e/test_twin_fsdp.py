"""The twin's full fine-tuning path through Snakemake: SFT then DPO, `method: full`, FSDP2 on 2 CPU ranks (gloo).

A real Snakemake run in a scratch copy (model conversion, data, contamination gate, sft, dpo) of tiny-tulu2-dpo at
reduced size, with its own stages: full fine-tuning, `strategy: fsdp` (the real Tulu 2 recipes' strategy, moot when
`make run` trains on one process); MENAGERIE_NPROC=2 makes each training job torchrun two processes, which shard the
model. DPO precomputes its reference log-probs here (the 70B recipe's choice; the twin holds a reference model).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from workflow_copy import SNAKEMAKE, copy_workflow

OVERLAY = """
recipes:
  tiny-fsdp:
    extends: tiny-tulu2-dpo
    data:
      sft: {sources: [{dataset: tiny-sft, count: 48}, {dataset: tiny-units-sft, count: 16}], validation: 8}
      dpo: {sources: [{dataset: tiny-prefs, count: 16}], validation: 0}
    stages:
      sft: {learning_rate: 2.0e-5, max_steps: 2, global_batch_size: 4, micro_batch_size: 2, max_seq_length: 48,
            eval_steps: 2}
      dpo: {reference: precomputed, learning_rate: 5.0e-7, max_steps: 2, global_batch_size: 4, micro_batch_size: 2,
            max_seq_length: 48, eval_steps: 2}
"""


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_twin_full_sft_and_dpo_with_fsdp_on_two_cpu_ranks(tmp_path):
    work = copy_workflow(tmp_path / "project", share_downloads=True)
    (work / "fsdp.yaml").write_text(OVERLAY)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MENAGERIE_NPROC": "2",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        str(SNAKEMAKE),
        "results/tiny-fsdp/dpo",
        "--cores",
        "2",
        "--configfile",
        "fsdp.yaml",
        "--config",
        "recipe=tiny-fsdp",
    ]
    run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1400)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-2500:]}" for p in sorted((work / "logs").rglob("*.log")))
    assert run.returncode == 0, run.stderr[-4000:] + logs

    results = work / "results" / "tiny-fsdp"
    for stage in ("sft", "dpo"):
        record = json.loads((results / stage / "provenance.json").read_text())
        assert record["method"] == "full" and record["strategy"] == "fsdp"
        assert record["batch"]["processes"] == 2 and record["metrics"]["global_step"] == 2
        ranks = record["rank_memory"]
        assert [r["rank"] for r in ranks] == [0, 1]
        # each rank holds about half of SmolLM2-135M's fp32 weights (dim-0 shards; odd rows pad one rank)
        total = sum(r["parameter_bytes"] for r in ranks)
        assert total > 135e6 * 4 * 0.95 and max(r["parameter_bytes"] for r in ranks) < 0.51 * total
        assert all(r["optimizer_state_dtypes"] == ["float32"] for r in ranks)
        assert (results / stage / "model.safetensors").exists()
        assert not (results / stage / "adapter_config.json").exists()
    assert (work / "results" / "tiny-fsdp" / "dpo" / "config.json").exists()
