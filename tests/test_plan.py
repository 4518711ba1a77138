"""The memory/time planner (menagerie/plan.py) against measured and published numbers.

Measured here: the tiny twin's weights, gradients and AdamW state counted from live tensors after a real optimizer
step (exact), and the bytes autograd saves per decoder layer (saved_tensors_hooks) against the activation formula.
Published: the ZeRO paper's 16 bytes/param for mixed-precision Adam (7.5B -> 120 GB; 1.9 GB fully sharded over 64),
and the QLoRA paper's 65B fine-tune on one 48 GB GPU. Config: every architecture's declared parameter count equals
its shapes', a bare `a100` is refused, a planted infeasible stage is refused with one sentence.
"""

from __future__ import annotations

import copy

import pytest

from menagerie.config import load_yaml, validate_config
from menagerie.errors import ConfigError
from menagerie.plan import (
    Architecture,
    activations,
    check_plan,
    choose_strategy,
    estimate_training,
    layer_elements,
    model_states,
    plan_recipe,
    recipe_architecture,
    recommended_runtime_min,
    refusal,
    runtime_problem,
    trainable,
)

from recipes import CONFIG_PATH, PUBLISHED_RECIPES  # noqa: E402


@pytest.fixture(scope="module")
def raw():
    return load_yaml(CONFIG_PATH)


@pytest.fixture(scope="module")
def config(raw):
    return validate_config(raw)


def with_changes(raw: dict, **recipes) -> dict:
    """The shipped config with recipe overrides merged in (recipe name -> partial recipe), validated."""
    from menagerie.config import deep_merge

    return validate_config(deep_merge(copy.deepcopy(raw), {"recipes": recipes}))


# ------------------------------------------------------------------------------------------------ config data


def test_every_architecture_matches_its_declared_parameter_count(config):
    archs = {name: entry for name, entry in config["models"].items() if entry.get("architecture")}
    assert set(archs) == set(config["models"]), "every base model needs its shapes for the planner"
    for name, entry in archs.items():
        arch = recipe_architecture({"models": config["models"], "recipes": {"r": {"model": name}}}, "r")
        assert arch.counted == entry["architecture"]["parameters"], name


def test_a_mistyped_shape_is_refused_with_one_sentence(raw):
    bad = copy.deepcopy(raw)
    bad["models"]["llama-2-7b"]["architecture"]["intermediate"] = 11000
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    message = str(err.value)
    assert "model 'llama-2-7b'" in message and "6,738,415,616" in message and "\n" not in message


def test_a_bare_a100_is_refused_asking_for_its_memory(raw):
    with pytest.raises(ConfigError) as err:
        with_changes(raw, **{"tulu2-7b": {"stages": {"sft": {"resources": {"gpu_model": "a100"}}}}})
    message = str(err.value)
    assert "recipe 'tulu2-7b'" in message and "stages.sft.resources.gpu_model" in message
    assert "a100_40gb or a100_80gb" in message and "\n" not in message


def test_an_unknown_gpu_model_is_refused(raw):
    with pytest.raises(ConfigError, match="names unknown GPU model 'tpu-v3'"):
        with_changes(raw, **{"birbal-7b": {"eval": {"resources": {"gpu_model": "tpu-v3"}}}})


# ------------------------------------------------------------------------------------------------ measured: tiny twin


def _tiny_model(arch: Architecture, layers: int | None = None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=arch.hidden,
            intermediate_size=arch.intermediate,
            num_hidden_layers=layers or arch.layers,
            num_attention_heads=arch.heads,
            num_key_value_heads=arch.kv_heads,
            vocab_size=arch.vocab,
            tie_word_embeddings=arch.tied_embeddings,
            max_position_embeddings=arch.context,
        )
    )


def _live_bytes(model, optimizer) -> dict[str, int]:
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    state = sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if hasattr(t, "numel")
    )
    return {"weights": weights, "gradients": grads, "optimizer": state}


@pytest.mark.slow  # a real AdamW step on 135M parameters: ~10 s idle, over a minute on a loaded machine
@pytest.mark.parametrize("method", ["full", "lora"])
def test_tiny_twin_model_states_equal_live_tensors_after_a_real_adamw_step(config, method):
    """SmolLM2-135M built from its config with random weights, one AdamW step in fp32 (the twins' CPU precision):
    the bytes of the parameters, gradients and optimizer state are exactly the planner's."""
    import torch

    twin = copy.deepcopy(config["recipes"]["tiny-tulu2-dpo"]["stages"]["sft"])
    twin["method"] = method  # the twin trains full; its LoRA variant with the Platypus/Birbal twins' r 16
    if method == "lora":
        twin["lora"] = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
    arch = recipe_architecture(config, "tiny-tulu2-dpo")
    model = _tiny_model(arch)
    if method == "lora":
        from menagerie.train.common import lora_config
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(twin))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, arch.vocab, (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()

    live = _live_bytes(model, optimizer)
    planned = model_states(arch, twin, processes=1, strategy="ddp")
    assert live == {k: int(planned[k]) for k in live}
    assert set(planned) == set(live)  # one process: no DDP buckets


@pytest.mark.parametrize("variant", ["full", "lora", "lora-dropout", "full-checkpointed"])
def test_activation_formula_matches_the_bytes_autograd_saves_per_layer(config, variant):
    """Bytes of the tensors autograd saves for backward (parameters excluded), two layers minus one, in fp32 on
    CPU, against layer_elements() (SmolLM2's shapes, a short sequence)."""
    import torch

    arch = recipe_architecture(config, "tiny-tulu2-dpo")
    settings = {
        "method": "lora" if "lora" in variant else "full",
        "precision": "fp32",
        "micro_batch_size": 2,
        "max_seq_length": 64,
        "global_batch_size": 2,
        "lora": {"r": 16, "dropout": 0.05 if "dropout" in variant else 0.0, "target_modules": "all-linear"},
        "gradient_checkpointing": "checkpointed" in variant,
    }
    saved = []
    for layers in (1, 2):
        model = _tiny_model(arch, layers)
        if settings["method"] == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model,
                LoraConfig(r=16, lora_alpha=32, lora_dropout=settings["lora"]["dropout"], target_modules="all-linear"),
            )
        if settings["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages = {}

        def pack(t, storages=storages, params=params):
            if t.untyped_storage().data_ptr() not in params:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(0, arch.vocab, (2, 64))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids)
        saved.append(sum(storages.values()))
    per_layer = saved[1] - saved[0]
    tokens = 2 * 64
    if settings["gradient_checkpointing"]:
        planned = activations(arch, settings)["checkpoints"] / arch.layers
        assert per_layer == planned == tokens * 4 * arch.hidden
    else:
        planned = tokens * 4 * layer_elements(arch, settings)
        assert abs(per_layer - planned) / per_layer < 0.02, (per_layer, planned)


# ------------------------------------------------------------------------------------------------ published figures


def _arch_7_5b() -> Architecture:
    # the ZeRO paper's 7.5B model only fixes the parameter count; shapes serve the tensor count
    return Architecture(
        layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, vocab=32000, parameters=7_500_000_000
    )


def test_zero_paper_16_bytes_per_parameter_for_mixed_precision_adam():
    """ZeRO (Rajbhandari et al. 2019) §3.1 / Figure 1: mixed-precision Adam holds 16 bytes/param, 120 GB for
    7.5B; fully sharded over Nd = 64 (P_os+g+p) 1.9 GB."""
    arch = _arch_7_5b()
    stage = {"method": "full", "precision": "bf16", "optimizer": "adamw_torch"}
    one = model_states(arch, stage, processes=1, strategy="ddp")
    assert sum(one.values()) == pytest.approx(120e9, rel=1e-6)
    sharded = model_states(arch, stage, processes=64, strategy="fsdp")
    assert sum(sharded.values()) == pytest.approx(1.875e9, rel=1e-6)
    assert round(sum(sharded.values()) / 1e9, 1) == 1.9


def _qlora_65b_config(raw: dict, method: str) -> dict:
    """LLaMA-65B (LLaMA paper Table 2 / its HF config: 80 layers, 8192 hidden, 22016 intermediate, 64 heads) with
    the QLoRA paper's Guanaco-65B setting: NF4 + double quantization, bf16 compute, LoRA r 64 on all linear layers,
    dropout 0.05, paged AdamW, batch 1 x 512 tokens, one 48 GB GPU."""
    merged = copy.deepcopy(raw)
    merged["models"]["llama-65b"] = {
        "source": "hub",
        "repo": "huggyllama/llama-65b",
        "architecture": {
            "parameters": 65_285_660_672,
            "layers": 80,
            "hidden": 8192,
            "intermediate": 22016,
            "heads": 64,
            "kv_heads": 64,
            "vocab": 32000,
            "context": 2048,
            "source": "LLaMA paper Table 2",
        },
    }
    stage = {
        "method": method,
        "learning_rate": 1e-4,
        "global_batch_size": 16,
        "micro_batch_size": 1,
        "max_seq_length": 512,
        "precision": "bf16",
        "gradient_checkpointing": True,
        "resources": {"gpus": 1, "gpu_model": "a6000_48gb"},
    }
    if method == "qlora":
        stage.update(
            optimizer="paged_adamw_32bit",
            lora={"r": 64, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
            quantization={"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
        )
    merged["recipes"]["guanaco-65b"] = {"extends": "tulu2-7b", "model": "llama-65b", "stages": {"sft": stage}}
    return validate_config(merged)


def test_qlora_paper_65b_finetunes_on_one_48gb_gpu_and_full_65b_does_not(raw):
    config = _qlora_65b_config(raw, "qlora")
    qlora = estimate_training(config, "guanaco-65b", "sft")
    assert qlora.fits, qlora.parts
    # the 4-bit base: 0.5 byte/param + 0.127 bit/param of double-quantized constants (QLoRA §3) on the linear
    # layers; embeddings, norms, LM head in fp32; fp32 adapters
    linear = 80 * (4 * 8192**2 + 3 * 8192 * 22016)
    adapters = trainable(recipe_architecture(config, "guanaco-65b"), config["recipes"]["guanaco-65b"]["stages"]["sft"])
    nf4 = qlora.parts["weights"] - 4.0 * (65_285_660_672 - linear) - 4.0 * adapters[0]
    assert nf4 == pytest.approx(linear * (4 + 0.127) / 8, rel=1e-3)
    full = estimate_training(_qlora_65b_config(raw, "full"), "guanaco-65b", "sft")
    assert not full.fits and full.total > 16 * 65e9


# ------------------------------------------------------------------------------------------------ strategy, refusal


def test_choose_strategy(raw, config):
    assert choose_strategy(config, "tiny-platypus2", "sft") == "ddp"  # CPU, strategy null
    assert choose_strategy(config, "tiny-tulu2-dpo", "sft") == "fsdp"  # as tulu2-7b (moot on 1 process)
    assert choose_strategy(config, "tulu2-qlora-7b", "sft") == "ddp"  # one GPU: nothing to shard
    assert choose_strategy(config, "tulu2-7b", "sft") == "fsdp"  # 7B x 16 B/param > 80 GiB replicated
    assert not estimate_training(config, "tulu2-7b", "sft", "ddp").fits
    forced = with_changes(raw, **{"tulu2-7b": {"stages": {"sft": {"strategy": "ddp"}}}})
    assert choose_strategy(forced, "tulu2-7b", "sft") == "ddp"  # the recipe's explicit choice wins


def test_a_planted_infeasible_stage_is_refused_with_one_sentence(raw):
    planted = with_changes(
        raw,
        **{
            "tulu2-70b": {
                "stages": {"sft": {"strategy": "ddp", "resources": {"nodes": 1, "gpus": 1, "gpu_model": "a100_80gb"}}}
            }
        },
    )
    with pytest.raises(ConfigError) as err:
        check_plan(planted, ["tulu2-70b"])
    message = str(err.value)
    assert message.startswith("recipe 'tulu2-70b': stage sft needs an estimated ")
    assert "under ddp" in message and "1 x a100_80gb with 80.0 GiB each" in message and "\n" not in message
    total = float(message.split("needs an estimated ")[1].split(" GiB")[0])
    assert total > 16 * 68.9e9 / 2**30  # at least the 16 B/param model states of 69B parameters


def test_an_int8_stage_without_a_gpu_is_refused_and_a_4bit_one_is_planned_on_the_host(raw):
    planted = with_changes(raw, **{"platypus2-13b": {"stages": {"sft": {"resources": {"gpus": 0}}}}})
    with pytest.raises(ConfigError, match="stage sft cannot run on CPU under ddp: 8-bit loading"):
        check_plan(planted, ["platypus2-13b"])
    # NF4 runs on bitsandbytes' CPU backend: a 4-bit stage on the host is sized against mem_gb like any CPU stage
    cpu = with_changes(
        raw, **{"tulu2-qlora-7b": {"stages": {"sft": {"resources": {"gpus": 0, "gpu_model": None, "mem_gb": 4096}}}}}
    )
    est = estimate_training(cpu, "tulu2-qlora-7b", "sft")
    assert est.problem is None and est.capacity_label == "host 4096 GB"


def test_plan_covers_every_stage_of_every_published_recipe(config):
    for name in PUBLISHED_RECIPES:
        stages = [e.stage for e in plan_recipe(config, name)]
        recipe = config["recipes"][name]
        sampled = any(
            config["datasets"][i["dataset"]].get("source") == "ni_sampling"
            for i in recipe.get("data", {}).get("sft", {}).get("sources", [])
        )
        ni = ["ni inference (mistral-7b)"] if sampled else []  # Birbal's NI sampling, once (not for the release)
        expected = ni + ["contamination"] + [s for s in ("sft", "dpo", "merge") if recipe["stages"].get(s)] + ["eval"]
        assert stages == expected, name


@pytest.mark.parametrize("recipe", PUBLISHED_RECIPES)
def test_every_published_recipe_passes_the_planner(config, recipe):
    """Each stage fits its declared devices, GPU stages name their GPU, and a training stage declares the runtime
    the planner recommends (its estimate x 1.5 rounded up to the hour; a budgeted stage its budget + 1 h)."""
    for est in plan_recipe(config, recipe):
        assert est.fits, refusal(est)
        if est.kind != "contamination" and est.gpus:
            assert est.gpu_model, f"{recipe} {est.stage}: a GPU stage names its gpu_model"
        if est.hours is not None:
            assert runtime_problem(est) is None
            assert est.runtime_min == recommended_runtime_min(est), (recipe, est.stage, est.hours)


def test_the_qlora_70b_merge_streams_on_a_cpu_node_within_its_host_memory(raw, config):
    """The QLoRA-70B dequantize-merge runs on the host, no GPU (menagerie/dequantize_merge.py): one output shard, the
    largest tensor in flight (the 32,000 x 8,192 embeddings) and the fp32 r-64 adapter, not the 128 GiB bf16 model."""
    from menagerie.plan import GIB, HOST_OVERHEAD_BYTES, IN_FLIGHT_BYTES, MERGE_SHARD_BYTES, estimate_merge

    merge = config["recipes"]["tulu2-qlora-70b"]["stages"]["merge"]
    assert merge["dequantize_base"] and merge["resources"]["gpus"] == 0 and merge["resources"]["gpu_model"] is None
    est = estimate_merge(config, "tulu2-qlora-70b")
    assert est.devices == "CPU" and est.fits and est.capacity == merge["resources"]["mem_gb"] * 1e9
    per_layer = 64 * (2 * 8192 + 2 * (8192 + 1024) + 8192 + 8192 + 3 * (8192 + 28672))  # r (in + out), 7 modules
    assert est.parts == {
        "output shard": MERGE_SHARD_BYTES,
        "tensor in flight": IN_FLIGHT_BYTES * 32000 * 8192,
        "adapters": 4.0 * 80 * per_layer,
        "overhead": HOST_OVERHEAD_BYTES,
    }
    assert est.total < 16 * GIB < 2 * 68.98e9  # a fraction of the dequantized bf16 model the old merge held
    small = with_changes(raw, **{"tulu2-qlora-70b": {"stages": {"merge": {"resources": {"mem_gb": 8}}}}})
    with pytest.raises(
        ConfigError,
        match=r"stage merge needs an estimated 1\d\.\d GiB per device .* but declares "
        r"host 8 GB \(a merge runs on the host\)",
    ):
        check_plan(small, ["tulu2-qlora-70b"])


def test_the_shipped_config_passes_the_check_the_workflow_runs(config):
    check_plan(
        config
    )  # every recipe, the tiny twins included (menagerie.jobs.config_or_exit runs this at workflow start)


def test_plan_cli_prints_the_table_and_exits_1_naming_a_stage_that_cannot_fit(tmp_path, capsys):
    """scripts/plan.py (`make plan`): the table and assumptions for the named recipes; exit 1 with the sentence."""
    import importlib.util

    from recipes import ROOT

    spec = importlib.util.spec_from_file_location("plan_cli", ROOT / "scripts" / "plan.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--config", str(CONFIG_PATH), "--", "tulu2-70b", "birbal-7b"]) == 0
    out = capsys.readouterr().out
    assert "| tulu2-70b | sft | 4 node(s) x 8 x a100_80gb | fsdp |" in out and "| birbal-7b | sft |" in out
    assert "assumed MFU: full 0.40" in out and "min(600, max_seq_length)" in out
    planted = tmp_path / "planted.yaml"
    planted.write_text("recipes:\n  tulu2-70b:\n    stages: {sft: {resources: {nodes: 1}}}\n")
    assert cli.main(["--config", str(CONFIG_PATH), str(planted), "--", "tulu2-70b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: recipe 'tulu2-70b': stage sft needs an estimated ") and "under fsdp" in err


def test_a_training_job_whose_host_cannot_load_the_model_is_refused(raw):
    """Rank 0 alone materialises 70B in fp32 (276 GB) on the host before FSDP shards it: 128 GB per node is too
    little even for one copy."""
    planted = with_changes(raw, **{"tulu2-70b": {"stages": {"sft": {"resources": {"mem_gb": 128}}}}})
    with pytest.raises(
        ConfigError,
        match=r"stage sft cannot run on 4 node\(s\) x 8 x a100_80gb under fsdp: the first "
        r"node's host memory needs an estimated 324 GB",
    ):
        check_plan(planted, ["tulu2-70b"])


def test_plan_says_a_stage_longer_than_one_job_runs_as_a_chain_of_resumed_jobs(config, monkeypatch):
    """tulu2-qlora-70b's SFT (19 days) cannot be one SLURM job on a cluster with a 48 h MaxTime."""
    from menagerie.plan import job_chain_note, plan_recipe

    monkeypatch.delenv("MENAGERIE_SLURM_MAX_RUNTIME_MIN", raising=False)
    sft = next(e for e in plan_recipe(config, "tulu2-qlora-70b") if e.stage == "sft")
    note = job_chain_note(sft)
    assert note is not None and "runtime_min 27420 exceeds the per-job limit of 2880 min" in note
    assert "runs as 10 SLURM jobs, each resuming from the last checkpoint" in note
    assert job_chain_note(sft, {"MENAGERIE_SLURM_MAX_RUNTIME_MIN": "30000"}) is None


def test_a_host_memory_shortfall_does_not_switch_the_strategy_to_fsdp(raw):
    """Platypus2-13B LoRA on 2 GPUs fits replicated (ddp); 8 GB of host memory is too little under any strategy, so
    the planner keeps ddp and names the host memory instead of choosing FSDP for a GPU shortfall that is not there."""
    planted = with_changes(raw, **{"platypus2-13b": {"stages": {"sft": {"resources": {"gpus": 2, "mem_gb": 8}}}}})
    assert choose_strategy(planted, "platypus2-13b", "sft") == "ddp"
    with pytest.raises(ConfigError, match=r"stage sft cannot run on .* under ddp: the first node's host memory"):
        check_plan(planted, ["platypus2-13b"])


def test_host_memory_per_node_counts_every_loading_process_by_hand(config):
    """tulu2-70b / tulu2-dpo-70b on nodes of 8 GPUs, counted by hand from Llama-2-70B's shapes (GQA, 8 KV heads):
    per layer q,o 8192^2 + k,v 8192 x 1024 + MLP 3 x 8192 x 28672 + 2 norms; 80 layers, embeddings and LM head
    2 x 32000 x 8192, final norm -> 68,976,648,192 parameters. DDP: each of the node's 8 processes loads the fp32
    master copy (+ the bf16 reference for DPO); FSDP rank-0 loading: rank 0 only. Plus 6 GB per process."""
    from menagerie.plan import HOST_PER_PROCESS_GB, host_bytes

    layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    n = 80 * layer + 2 * 32000 * 8192 + 8192
    assert n == 68_976_648_192
    arch = recipe_architecture(config, "tulu2-70b")
    assert arch.n == n
    processes = 8 * HOST_PER_PROCESS_GB * 1e9
    sft = config["recipes"]["tulu2-70b"]["stages"]["sft"]
    dpo = config["recipes"]["tulu2-dpo-70b"]["stages"]["dpo"]
    assert host_bytes(arch, sft, sft["resources"], "ddp") == pytest.approx(8 * 4 * n + processes)  # 2,255 GB
    assert host_bytes(arch, sft, sft["resources"], "fsdp") == pytest.approx(4 * n + processes)  # 324 GB
    assert host_bytes(arch, dpo, dpo["resources"], "ddp") == pytest.approx(8 * (4 + 2) * n + processes)  # 3,359 GB
    assert host_bytes(arch, dpo, dpo["resources"], "fsdp") == pytest.approx((4 + 2) * n + processes)  # 462 GB
    # the shipped nodes (960 GB) hold the FSDP figure; a replica per process does not fit them
    assert estimate_training(config, "tulu2-70b", "sft", "fsdp").problem is None
    ddp = estimate_training(config, "tulu2-70b", "sft", "ddp")
    assert ddp.host_gb == pytest.approx((8 * 4 * n + processes) / 1e9)
    assert "needs an estimated 2255 GB (every process loads the model" in ddp.problem
