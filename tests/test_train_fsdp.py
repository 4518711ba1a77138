"""FSDP2 on CPU (gloo): 2 sharded ranks train exactly as 1 process; sharded checkpoints resume; multi-node launch.

Real `scripts/train.py` runs under torchrun through the stage launcher (menagerie.train.launch) on the tiny random
Llama, full fine-tuning in fp32. Only the GPUs are missing: FSDP2 (accelerate's plugin, torch fully_shard) runs on
CPU processes with the gloo backend, the code path a GPU job takes (menagerie.train.strategy.cpu_fsdp).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from menagerie.config import load_config  # noqa: E402
from menagerie.train import launch  # noqa: E402
from tiny_models import build_tiny_llama  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = "tiny-tulu2-dpo"
TRAIN = REPO / "scripts" / "train.py"
STAGE = dict(
    method="full",
    precision="fp32",
    strategy="fsdp",
    learning_rate=1.0e-3,
    lr_scheduler="constant",
    max_steps=4,
    max_seq_length=48,
    global_batch_size=4,
    micro_batch_size=2,
    warmup_ratio=0.0,
    warmup_steps=0,
    save_steps=2,
    budget_gpu_hours=None,
    weight_decay=0.0,
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, make_tiny_tokenizer) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", make_tiny_tokenizer(add_bos=True))


def write_setup(root: Path, stage_name: str, **overrides) -> dict[str, Path]:
    config = load_config(REPO / "config.yaml")
    recipe = copy.deepcopy(config["recipes"][RECIPE])
    recipe["stages"][stage_name].update(STAGE, **overrides)
    config["recipes"] = {RECIPE: recipe}
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    if stage_name == "sft":
        rows = [
            {
                "id": f"s{i}",
                "source": "t",
                "messages": [
                    {"role": "user", "content": f"What is the sum of {i % 13} and {(7 * i) % 11}?"},
                    {"role": "assistant", "content": f"The sum is {i % 13 + (7 * i) % 11}."},
                ],
            }
            for i in range(64)
        ]
    else:
        rows = [
            {
                "id": f"p{i}",
                "source": "t",
                "messages": [{"role": "user", "content": f"Compute {i % 9} + {i % 4}."}],
                "chosen": f"{i % 9 + i % 4}.",
                "rejected": f"{i % 9 + i % 4 + 3}.",
            }
            for i in range(64)
        ]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"config": root / "config.json", "train": root / "train.jsonl", "stage": stage_name}


def env() -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", launch.NPROC_ENV)}
    out.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return out


def argv(setup: dict, model: Path, root: Path) -> list[str]:
    return [
        str(TRAIN),
        setup["stage"],
        "--config",
        str(setup["config"]),
        "--recipe",
        RECIPE,
        "--model",
        str(model),
        "--train",
        str(setup["train"]),
        "--out",
        str(root / "out"),
        "--work",
        str(root / "work"),
    ]


def result(root: Path) -> dict:
    from safetensors.torch import load_file

    out = root / "out"
    return {
        "provenance": json.loads((out / "provenance.json").read_text()),
        "losses": [e["loss"] for e in json.loads((out / "trainer_log.json").read_text()) if "loss" in e],
        "weights": load_file(str(out / "model.safetensors")),
    }


def train(setup: dict, model: Path, root: Path, nproc: int) -> dict:
    prefix = launch.command({"gpus": 0}, env={launch.NPROC_ENV: str(nproc)})
    done = subprocess.run(
        [*prefix, *argv(setup, model, root)], env=env(), cwd=REPO, timeout=600, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return result(root)


def assert_same_training(one: dict, two: dict) -> None:
    assert len(one["losses"]) == len(two["losses"]) == STAGE["max_steps"]
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-5)
    assert one["weights"].keys() == two["weights"].keys()
    for name, weight in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], weight, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, tiny_model) -> dict:
    root = tmp_path_factory.mktemp("fsdp-sft")
    setup = write_setup(root / "setup", "sft")
    return {
        "setup": setup,
        "root": root,
        1: train(setup, tiny_model, root / "nproc-1", 1),
        2: train(setup, tiny_model, root / "nproc-2", 2),
    }


@pytest.mark.slow
def test_fsdp_on_two_ranks_trains_sft_exactly_as_one_process(sft_runs):
    one, two = sft_runs[1], sft_runs[2]
    assert two["provenance"]["strategy"] == "fsdp" and two["provenance"]["batch"]["processes"] == 2
    assert_same_training(one, two)
    # the final directory is a full (gathered) Hugging Face model, loadable by from_pretrained
    assert all(not hasattr(w, "to_local") for w in two["weights"].values())


@pytest.mark.slow
def test_each_fsdp_rank_holds_half_the_parameters_and_optimizer_state(sft_runs):
    whole = sft_runs[1]["provenance"]["rank_memory"]
    ranks = sft_runs[2]["provenance"]["rank_memory"]
    assert len(whole) == 1 and [r["rank"] for r in ranks] == [0, 1]
    assert whole[0]["parameter_bytes"] == sum(w.numel() * w.element_size() for w in sft_runs[1]["weights"].values())
    assert whole[0]["optimizer_state_bytes"] == 2 * whole[0]["parameter_bytes"]  # AdamW: exp_avg, exp_avg_sq
    for rank in ranks:  # every tiny-Llama dimension is even, so dim-0 shards split exactly in two
        assert rank["parameter_bytes"] * 2 == whole[0]["parameter_bytes"]
        assert rank["optimizer_state_bytes"] * 2 == whole[0]["optimizer_state_bytes"]
        assert rank["trainable_parameter_dtypes"] == rank["optimizer_state_dtypes"] == ["float32"]


@pytest.mark.slow
def test_fsdp_two_ranks_load_the_weights_on_rank_0_only(sft_runs):
    """Rank 1 builds placeholders (common.empty_model) and accelerate broadcasts rank 0's weights into the shards; the
    parity test above shows training is unchanged, and rank 1 still ends up holding its real half."""
    whole = sft_runs[1]["provenance"]["rank_memory"][0]
    ranks = sft_runs[2]["provenance"]["rank_memory"]
    assert sft_runs[2]["provenance"]["rank0_loading"] is True and sft_runs[1]["provenance"]["rank0_loading"] is False
    assert all(r["load_resident_bytes"] is not None and r["peak_rss_bytes"] > 0 for r in ranks)
    assert ranks[1]["parameter_bytes"] * 2 == whole["parameter_bytes"]


def test_placeholder_model_takes_no_host_memory_until_written(tmp_path, make_tiny_tokenizer):
    """What rank 1 loads under FSDP rank-0 loading: a 64 MB fp32 model costs ~0 resident bytes (untouched pages),
    while the real load on rank 0 adds at least its parameter bytes; same architecture, names, shapes and dtypes."""
    from transformers import AutoModelForCausalLM

    from menagerie.train import common

    wide = build_tiny_llama(tmp_path / "wide", make_tiny_tokenizer(add_bos=True), vocab_size=32000, hidden=256)
    model_dir = tmp_path / "wide-bf16"  # published checkpoints are bf16: the fp32 master copy is new memory
    AutoModelForCausalLM.from_pretrained(str(wide), dtype=torch.bfloat16).save_pretrained(str(model_dir))
    stage = {"method": "full", "precision": "bf16"}
    # resident bytes measured in a fresh process whose large allocations are fresh mappings (a fixed glibc mmap
    # threshold): in this long-lived test process freed pages stay resident and a real load can reuse them unseen
    probe = (
        "import json, sys\n"
        "from menagerie.train import common\n"
        "from menagerie.train.strategy import resident_bytes\n"
        "stage = json.loads(sys.argv[2])\n"
        "common.load_training_model(sys.argv[1], stage, placeholder=True)\n"  # imports and lazy set-up, unmeasured
        "before = resident_bytes()\n"
        "empty = common.load_training_model(sys.argv[1], stage, placeholder=True)\n"
        "empty_cost = resident_bytes() - before\n"
        "before = resident_bytes()\n"
        "real = common.load_training_model(sys.argv[1], stage)\n"
        "print(json.dumps({'empty': empty_cost, 'real': resident_bytes() - before}))\n"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "HF_HUB_OFFLINE": "1"}
    ran = subprocess.run(
        [sys.executable, "-c", probe, str(model_dir), json.dumps(stage)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    cost = json.loads(ran.stdout.strip().splitlines()[-1])
    empty = common.load_training_model(model_dir, stage, placeholder=True)
    nbytes = sum(p.numel() * p.element_size() for p in empty.parameters())
    assert nbytes > 60e6 and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in empty.parameters())
    assert cost["empty"] < 0.1 * nbytes, cost
    assert cost["real"] >= 0.9 * nbytes, cost
    real = common.load_training_model(model_dir, stage)
    assert [(n, p.shape, p.dtype) for n, p in empty.named_parameters()] == [
        (n, p.shape, p.dtype) for n, p in real.named_parameters()
    ]
    assert len({p.data_ptr() for p in empty.parameters()}) == len(list(empty.parameters()))  # accelerate's remap key
    buffers = dict(real.named_buffers())
    for name, buffer in empty.named_buffers():  # rotary inv_freq computed for real
        torch.testing.assert_close(buffer, buffers[name])
    reference = common.load_reference_model(model_dir, stage, placeholder=True)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in reference.parameters())


def test_placeholder_model_ties_its_head_as_from_pretrained_does(tmp_path):
    """SmolLM2 ties its LM head to the embeddings; accelerate maps the optimizer's parameters by name, so the
    placeholder model must name (and tie) exactly what the real one does."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from menagerie.train import common

    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(
        LlamaConfig(**shape, intermediate_size=128, vocab_size=500, tie_word_embeddings=True)
    ).save_pretrained(str(tmp_path))
    stage = {"method": "full", "precision": "bf16"}
    empty, real = (
        common.load_training_model(tmp_path, stage, placeholder=True),
        common.load_training_model(tmp_path, stage),
    )
    assert [n for n, _ in empty.named_parameters()] == [n for n, _ in real.named_parameters()]
    assert empty.lm_head.weight is empty.model.embed_tokens.weight


@pytest.mark.slow
def test_fsdp_sharded_checkpoint_resumes_to_the_same_weights(sft_runs, tiny_model):
    """Four steps with sharded checkpoints at 2 and 4; drop checkpoint-4 and the output (a run killed after step 2,
    same settings: the checkpoint belongs to this trajectory) and rerun: it resumes from the sharded checkpoint-2 to
    the same losses and weights as four steps at once."""
    import shutil

    root, setup = sft_runs["root"] / "resumed", sft_runs["setup"]
    train(setup, tiny_model, root, 2)
    checkpoint = root / "work" / "checkpoint-2"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir() and (checkpoint / "optimizer_0").is_dir()  # one shard set
    shutil.rmtree(root / "work" / "checkpoint-4")
    shutil.rmtree(root / "out")
    resumed = train(setup, tiny_model, root, 2)
    assert resumed["provenance"]["resumed_from"].endswith("checkpoint-2")
    # the log carries steps 1-2 from the checkpoint's trainer state and 3-4 from the resumed run
    assert resumed["losses"] == pytest.approx(sft_runs[2]["losses"], rel=1e-5, abs=1e-5)
    for name, weight in sft_runs[2]["weights"].items():
        torch.testing.assert_close(resumed["weights"][name], weight, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["model", "precomputed"])
def test_fsdp_dpo_on_two_ranks_matches_one_process(tmp_path, tiny_model, reference):
    setup = write_setup(tmp_path / "setup", "dpo", reference=reference, learning_rate=1.0e-4)
    one, two = train(setup, tiny_model, tmp_path / "nproc-1", 1), train(setup, tiny_model, tmp_path / "nproc-2", 2)
    assert two["provenance"]["strategy"] == "fsdp" and two["provenance"]["rank0_loading"] is True
    assert_same_training(one, two)
    assert one["losses"][0] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference at the first step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_agents_rendezvous_and_train_as_one_process(sft_runs, tiny_model):
    """Two nodes simulated by two torchrun agents on this machine (c10d rendezvous on 127.0.0.1, one rank each)."""
    root = sft_runs["root"] / "two-agents"
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [
        subprocess.Popen(
            [
                sys.executable,
                *launch.torchrun(2, 1, endpoint, "menagerie-test"),
                *argv(sft_runs["setup"], tiny_model, root),
            ],
            env=env(),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for agent in agents:
        _, err = agent.communicate(timeout=600)
        assert agent.returncode == 0, err[-3000:]
    two_nodes = result(root)
    assert two_nodes["provenance"]["batch"]["processes"] == 2
    assert_same_training(sft_runs[1], two_nodes)


def test_strategy_null_is_the_planners_choice_and_an_explicit_one_wins():
    from menagerie.train.strategy import effective_strategy

    config = copy.deepcopy(load_config(REPO / "config.yaml"))
    stage = config["recipes"]["tulu2-7b"]["stages"]["sft"]
    stage["strategy"] = None
    # a 7B full fine-tune replicated on each of 8 GPUs does not fit 80 GB: the planner shards it
    assert effective_strategy(stage, config, "tulu2-7b", "sft") == "fsdp"
    twin = config["recipes"][RECIPE]["stages"]["sft"]
    assert twin["strategy"] == "fsdp"  # the twin states Tulu 2's choice (it shards only with MENAGERIE_NPROC=2)
    twin["strategy"] = None
    assert effective_strategy(twin, config, RECIPE, "sft") == "ddp"  # CPU-only, left to the planner: nothing to shard
    assert effective_strategy(stage | {"strategy": "ddp"}, config, "tulu2-7b", "sft") == "ddp"
    assert effective_strategy(stage) == "ddp"  # no config at hand


def test_fsdp_arguments_wrap_decoder_layers_and_checkpoint_by_fsdp(tiny_model):
    from transformers import AutoModelForCausalLM

    from menagerie.train.strategy import trainer_arguments

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    args = trainer_arguments({"gradient_checkpointing": True, "method": "full"}, model, 8, "fsdp")
    assert args["fsdp"] is True and args["gradient_checkpointing"] is False
    assert args["fsdp_config"] | {} == {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
        "reshard_after_forward": True,
        "state_dict_type": "SHARDED_STATE_DICT",
        "activation_checkpointing": True,
        "cpu_ram_efficient_loading": True,  # rank 0 loads, the others build on meta
    }
    lora = {"gradient_checkpointing": True, "method": "lora"}
    assert trainer_arguments(lora, model, 8, "fsdp")["fsdp_config"]["cpu_ram_efficient_loading"] is False
    assert trainer_arguments({"gradient_checkpointing": True}, model, 8, "ddp") == {"gradient_checkpointing": True}
    assert trainer_arguments({"gradient_checkpointing": False}, model, 1, "fsdp") == {"gradient_checkpointing": False}
