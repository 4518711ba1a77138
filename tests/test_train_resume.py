"""Resume after a hard kill, the same global batch on 1 and 2 processes, and the multi-process launcher.

Real subprocess runs of `scripts/train.py sft` (through tests/train_probe.py, which records the micro-batches each
step sees) on a tiny random Llama: one run is SIGKILLed after its step-4 checkpoint and rerun; it must end exactly as
an uninterrupted run with the same seed (same batches per step, same losses, same adapter weights).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from menagerie.config import load_config  # noqa: E402
from tiny_models import build_tiny_llama  # noqa: E402
from menagerie.train import checkpoints, common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = "tiny-tulu2-dpo"
PROBE = REPO / "tests" / "train_probe.py"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, make_tiny_tokenizer) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", make_tiny_tokenizer(add_bos=True))


def sft_rows(n: int) -> list[dict]:
    return [
        {
            "id": f"sum-{i}",
            "source": "test",
            "messages": [
                {"role": "user", "content": f"What is the sum of {i % 13} and {(7 * i) % 11}?"},
                {"role": "assistant", "content": f"The sum of {i % 13} and {(7 * i) % 11} is {i % 13 + (7 * i) % 11}."},
            ],
        }
        for i in range(n)
    ]


def write_setup(root: Path, **sft) -> dict[str, Path]:
    """A resolved config whose tiny-tulu2-dpo SFT stage (full fine-tuning) is shrunk (plus `sft` overrides, e.g.
    `method="lora"`), and training data."""
    config = load_config(REPO / "config.yaml")
    recipe = copy.deepcopy(config["recipes"][RECIPE])
    recipe["stages"]["sft"].update(
        dict(
            max_steps=8,
            max_seq_length=64,
            global_batch_size=4,
            micro_batch_size=2,
            warmup_ratio=0.0,
            warmup_steps=0,
            save_steps=2,
            budget_gpu_hours=None,
        ),
        **sft,
    )
    config["recipes"] = {RECIPE: recipe}
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows(96)))
    return {"config": root / "config.json", "train": root / "sft.jsonl"}


def train_argv(setup: dict, model: Path, out: Path, work: Path) -> list[str]:
    return [
        "sft",
        "--config",
        str(setup["config"]),
        "--recipe",
        RECIPE,
        "--model",
        str(model),
        "--train",
        str(setup["train"]),
        "--out",
        str(out),
        "--work",
        str(work),
    ]


def probe_env(batches: Path, sleep: float = 0.0, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MENAGERIE_NPROC")}
    env.update(
        PROBE_BATCHES=str(batches),
        PROBE_SLEEP=str(sleep),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def batches_by_step(path: Path) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        steps.setdefault(entry["step"], []).append(f"{entry['rank']}:{entry['sha']}")
    return steps


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def run_uninterrupted(root: Path, setup: dict, model: Path) -> dict:
    subprocess.run(
        [sys.executable, str(PROBE), *train_argv(setup, model, root / "out", root / "work")],
        env=probe_env(root / "batches.jsonl"),
        check=True,
        timeout=600,
        cwd=REPO,
    )
    return {"out": root / "out", "batches": batches_by_step(root / "batches.jsonl")}


@pytest.mark.slow
def test_sigkilled_lora_packing_run_resumes_exactly(tmp_path, tiny_model):
    setup = write_setup(
        tmp_path / "setup",
        packing=True,
        method="lora",
        lora={"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"},
    )
    reference = run_uninterrupted(tmp_path / "reference", setup, tiny_model)

    root = tmp_path / "killed"
    argv = [sys.executable, str(PROBE), *train_argv(setup, tiny_model, root / "out", root / "work")]
    first = subprocess.Popen(
        argv,
        env=probe_env(root / "batches-1.jsonl", sleep=1.0),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (root / "work" / "checkpoint-4" / "trainer_state.json").exists():
        assert first.poll() is None, "the run ended before writing checkpoint-4"
        assert time.time() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (root / "out").exists()
    resume_from = checkpoints.last_checkpoint(root / "work")
    resumed_step = int(resume_from.rsplit("-", 1)[1])
    assert resumed_step >= 4
    assert (Path(resume_from) / common.BUDGET_FILE).is_file()

    subprocess.run(argv, env=probe_env(root / "batches-2.jsonl"), check=True, timeout=600, cwd=REPO)
    out = root / "out"
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["resumed_from"] == resume_from
    assert provenance["metrics"]["global_step"] == 8
    history = json.loads((out / "trainer_log.json").read_text())
    assert [e["step"] for e in history if "loss" in e] == list(range(1, 9))  # no step repeated after resume

    # the rerun trains exactly steps resumed_step+1..8, on the batches the uninterrupted run saw at those steps
    second = batches_by_step(root / "batches-2.jsonl")
    assert sorted(second) == list(range(resumed_step + 1, 9))
    assert all(second[s] == reference["batches"][s] for s in second)
    first_run = batches_by_step(root / "batches-1.jsonl")
    assert all(first_run[s] == reference["batches"][s] for s in range(1, resumed_step + 1))

    ref_history = json.loads((reference["out"] / "trainer_log.json").read_text())
    ref_losses = [e["loss"] for e in ref_history if "loss" in e]
    assert [e["loss"] for e in history if "loss" in e] == pytest.approx(ref_losses, rel=1e-4)
    ref_weights, weights = adapter(reference["out"]), adapter(out)
    assert ref_weights.keys() == weights.keys()
    for name in ref_weights:
        torch.testing.assert_close(weights[name], ref_weights[name], rtol=1e-5, atol=1e-6)


def test_budget_clock_continues_from_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / common.BUDGET_FILE).write_text(json.dumps({"used_gpu_hours": 1.5, "global_step": 6}))
    callback = common.budget_callback(2.0, 1, checkpoints.last_checkpoint(tmp_path))
    assert 1.5 <= callback.used_gpu_hours() < 1.51
    assert common.budget_callback(2.0, 1, None).used_gpu_hours() < 0.01


@pytest.mark.slow
def test_one_and_two_cpu_processes_train_the_same_global_batch(tmp_path, tiny_model):
    """torchrun (gloo, CPU) through the stage launcher: 2 x micro 2 x accumulation 1 == 1 x micro 2 x accumulation 2."""
    from menagerie.train import launch

    setup = write_setup(
        tmp_path / "setup",
        max_steps=2,
        method="lora",
        lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
    )
    runs = {}
    for nproc in (1, 2):
        root = tmp_path / f"nproc-{nproc}"
        prefix = launch.command({"gpus": 0}, env={launch.NPROC_ENV: str(nproc)})
        subprocess.run(
            [*prefix, str(PROBE), *train_argv(setup, tiny_model, root / "out", root / "work")],
            env=probe_env(root / "batches.jsonl"),
            check=True,
            timeout=600,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        runs[nproc] = {
            "provenance": json.loads((root / "out" / "provenance.json").read_text()),
            "history": json.loads((root / "out" / "trainer_log.json").read_text()),
            "batches": batches_by_step(root / "batches.jsonl"),
            "adapter": adapter(root / "out"),
        }
    assert runs[1]["provenance"]["batch"] == {
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "processes": 1,
        "gradient_accumulation_steps": 2,
    }
    assert runs[2]["provenance"]["batch"] == {
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "processes": 2,
        "gradient_accumulation_steps": 1,
    }
    # every step sees the same 4 sequences: two micro-batches on one process, one on each of two
    strip = lambda steps: {s: sorted(h.split(":")[1] for h in hashes) for s, hashes in steps.items()}  # noqa: E731
    assert strip(runs[1]["batches"]) == strip(runs[2]["batches"])
    assert {h.split(":")[0] for h in runs[2]["batches"][1]} == {"0", "1"}
    losses = {n: [e["loss"] for e in r["history"] if "loss" in e] for n, r in runs.items()}
    assert losses[2] == pytest.approx(losses[1], rel=1e-5)  # same token-level loss normalization
    assert runs[2]["provenance"]["metrics"]["global_step"] == 2
    for name, weight in runs[1]["adapter"].items():
        torch.testing.assert_close(runs[2]["adapter"][name], weight, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("gpus", "env", "expected"),
    [
        (0, {}, ["py"]),
        (1, {}, ["py"]),
        (8, {}, ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]),
        (0, {"MENAGERIE_NPROC": "2"}, ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]),
        (8, {"MENAGERIE_NPROC": "1"}, ["py"]),
    ],
)
def test_launch_command_starts_one_process_per_gpu(gpus, env, expected):
    from menagerie.train import launch

    assert launch.command({"gpus": gpus}, python="py", env=env) == expected


def test_launch_rejects_a_bad_process_override():
    from menagerie.errors import ConfigError
    from menagerie.train import launch

    with pytest.raises(ConfigError, match="MENAGERIE_NPROC='two'"):
        launch.command({"gpus": 1}, env={"MENAGERIE_NPROC": "two"})
    # the interpreter is shell words (menagerie.jobs.python_command quotes the host's path), split before quoting
    assert (
        launch.shell_prefix({"gpus": 2}, python="'/opt/my py'", env={})
        == "'/opt/my py' -m torch.distributed.run --standalone --nproc_per_node=2"
    )


def test_apptainer_interpreter_is_split_into_words_not_one_quoted_word():
    """Issue 14 item 1: under --sdm apptainer PYTHON is `env PYTHONPATH=. python`; quoted whole it is exit 127."""
    import shlex

    from menagerie.train import launch

    line = launch.shell_prefix({"gpus": 4}, python="env PYTHONPATH=. python", env={})
    assert line == "env PYTHONPATH=. python -m torch.distributed.run --standalone --nproc_per_node=4"
    assert shlex.split(line)[:3] == ["env", "PYTHONPATH=.", "python"]
    assert launch.shell_prefix({"gpus": 1}, python="env PYTHONPATH=. python", env={}) == "env PYTHONPATH=. python"


def test_multi_node_launch_is_srun_with_one_torchrun_agent_per_node_and_a_c10d_rendezvous():
    import shlex

    from menagerie.train import launch

    argv = launch.command({"gpus": 8, "nodes": 4}, python="py", env={})
    # --ntasks too: inside the plugin's `srun -n1` step a nested srun reads the step's SLURM_NTASKS=1 as its -n
    # (checked on the SLURM test cluster: `--ntasks-per-node=2` alone started 1 task there, with `--ntasks=2` two)
    assert argv[:5] == ["srun", "--overlap", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1"]
    assert argv[5:] == [
        "py",
        "-m",
        "torch.distributed.run",
        "--nnodes=4",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint",
        launch.Shell(f"{launch.FIRST_NODE}:29500"),
        "--rdzv_id",
        launch.JOB_ID,
    ]
    assert "--standalone" not in argv
    line = launch.shell_prefix({"gpus": 8, "nodes": 4}, python="env PYTHONPATH=. python", env={})
    # the first node and job id stay shell expansions, evaluated inside the allocation
    assert (
        '--rdzv_endpoint "$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)":29500 --rdzv_id "$SLURM_JOB_ID"'
    ) in line
    words = shlex.split(line)
    assert words[:8] == [
        "srun",
        "--overlap",
        "--nodes=4",
        "--ntasks=4",
        "--ntasks-per-node=1",
        "env",
        "PYTHONPATH=.",
        "python",
    ]
    # MENAGERIE_NPROC overrides the processes per node, not the node count
    assert "--nproc_per_node=2" in launch.command({"gpus": 8, "nodes": 2}, python="py", env={"MENAGERIE_NPROC": "2"})


def test_the_global_batch_survives_any_node_count():
    """World size = nodes x GPUs per node: derive_batch keeps the recipe's global batch (Tulu 2's 128)."""
    for nodes, gpus in ((1, 8), (2, 8), (4, 8), (8, 8)):
        batch = common.derive_batch(128, 1, nodes * gpus)
        assert batch["micro_batch_size"] * batch["gradient_accumulation_steps"] * nodes * gpus == 128
