"""Memory and time planner: bytes per device for every stage of a recipe, and the expected training time.

Counted per device (GPU, or the host for a CPU-only stage), for Llama-architecture decoders (Llama 2, CodeLlama,
Mistral, SmolLM2) from their shapes in `models.<name>.architecture`:

- weights: full fine-tuning keeps fp32 master weights (4 B/param; mixed precision computes in bf16/fp16 from them);
  LoRA keeps the frozen base in the compute dtype (2 B/param in bf16/fp16), 8-bit bases 1 B/param, NF4 bases
  0.5 B/param + the quantization constants (fp32 absmax per 64 weights, or with double quantization an 8-bit absmax
  per 64 and an fp32 one per 256 blocks: 0.127 bit/param as the QLoRA paper says); a quantized base's embeddings,
  norms and LM head are cast to fp32 by peft's prepare_model_for_kbit_training. LoRA adapters are fp32.
- gradients: 4 B per trainable parameter (fp32, the master weights' dtype).
- optimizer: AdamW's two fp32 moments, 8 B per trainable parameter, and torch's fp32 `step` counter per tensor
  (an 8-bit optimizer: 2 B per parameter; a paged bitsandbytes optimizer keeps its state in unified memory that
  pages out to the host under pressure, the QLoRA paper's remedy for memory spikes, so it is not counted).
  Together for full fine-tuning: 16 B/param, the ZeRO paper's figure for mixed-precision Adam.
- compute copy: mixed precision's bf16/fp16 copy of the weights the matmuls use (autocast keeps every cast weight
  for the backward pass: 2 B/param under DDP; FSDP gathers two decoder layers at a time, plus the root unit —
  embeddings, final norm, LM head — for the whole step); a quantized base dequantizes one linear layer at a time.
- DDP buckets: with more than one process DDP holds a second copy of the gradients (gradient_as_bucket_view off).
- reference (DPO): a frozen copy of the model in the compute dtype (`reference: model`), nothing when the
  reference log-probs are precomputed, nothing for LoRA (the reference is the base with the adapter disabled).
- activations, per micro batch of t = micro x max_seq_length tokens (micro as derive_batch sets it for the
  declared GPUs; DPO: chosen and rejected, 2x) at e bytes per element (2 in bf16/fp16, 4 in fp32). A decoder layer
  saves layer_elements() per token (counted from autograd's saved tensors: 8h + 2kv + 4I for full fine-tuning with
  SDPA attention, no s x s matrix); the loss head t x V x 12 bytes (logits, the fp32 log-softmax, the gradient).
  Without checkpointing: L x t x e x layer_elements + head. With gradient checkpointing (always on for a quantized
  base): each layer's input, L x t x h x (4, the fp32 residual stream; e under FSDP's bf16 policy), plus the larger
  of one recomputed layer and the loss head (they are not alive at once).
- overhead: 1.5 GiB per device (CUDA context, cuBLAS workspace, allocator slack).
- merge (on the host, no GPU): a plain merge holds the target in the merge dtype and the fp32 adapters; a QLoRA
  dequantize-merge streams tensor by tensor: one 2 GiB output shard, 24 B per element of the largest tensor in
  flight, the fp32 adapter.
- host memory of a GPU training job (the first node's mem_gb, host_bytes): each process that loads the model holds
  it whole on the host before it is sharded or moved (fp32 for full fine-tuning, + DPO's reference in the compute
  dtype): every process of the node under DDP, only rank 0 under FSDP rank-0 loading; plus 6 GB per process.

Under `fsdp` weights, gradients, optimizer state and the reference are divided by nodes x gpus; `ddp` replicates
them. Expected training time = tokens x 6 x params (+ 2 x params for DPO's reference forward, + 2 x params for the
forward gradient checkpointing recomputes) / (nodes x gpus x peak bf16 FLOP/s x MFU), with the MFU assumed per
method (ASSUMED_MFU) and tokens = rows x epochs x sequences per row x min(ASSUMED_MEAN_TOKENS, max_seq_length),
capped by the stage's GPU-hour budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from menagerie.device import DTYPE_BYTES, PRECISION_DTYPES, derive_batch
from menagerie.errors import ConfigError

GIB = 1024**3
OVERHEAD_BYTES = int(1.5 * GIB)  # per device: CUDA context, cuBLAS workspace, allocator slack
HOST_OVERHEAD_BYTES = 2 * GIB  # a CPU-only stage's Python, torch and tokenizer
ASSUMED_MEAN_TOKENS = 600  # tokens per sequence (prompt + response, chat template), capped at max len
ASSUMED_MFU = {"full": 0.40, "lora": 0.35, "lora-int8": 0.15, "qlora": 0.20}  # 6N-counted FLOPs / peak
RUNTIME_MARGIN = 1.5  # declared runtime_min >= estimate x this is what `make plan` recommends
NF4_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}  # per weight, by double_quant
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
COMPUTE_BYTES = {p: DTYPE_BYTES[d] for p, d in PRECISION_DTYPES.items()}  # by precision
LOSS_HEAD_BYTES = 12  # per token and vocabulary entry: logits, fp32 log-softmax, gradient


# ------------------------------------------------------------------------------------------------ architecture


@dataclass(frozen=True)
class Architecture:
    """The shapes of a Llama-architecture decoder (no biases; SwiGLU MLP; RMSNorm; optional tied embeddings)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False
    parameters: int | None = None  # the declared count; `counted` is what the shapes give
    context: int = 4096

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear module of one decoder layer."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.module_shapes().values())

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder layers' linear modules (what 8-/4-bit loading quantizes)."""
        return self.layers * self.layer_linear_params

    @property
    def layer_params(self) -> int:
        return self.layer_linear_params + 2 * self.hidden  # + two RMSNorm weights

    @property
    def counted(self) -> int:
        """Parameters from the shapes: embeddings (+ LM head unless tied), layers, final norm."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + self.layers * self.layer_params + self.hidden

    @property
    def n(self) -> int:
        return self.parameters or self.counted

    @property
    def tensors(self) -> int:
        """Parameter tensors: 7 linear + 2 norms per layer, embeddings, final norm, LM head unless tied."""
        return self.layers * 9 + 2 + (0 if self.tied_embeddings else 1)

    @property
    def root_params(self) -> int:
        """Parameters outside the decoder layers (FSDP's root unit; kept in fp32 on a quantized base)."""
        return self.n - self.layers * self.layer_params


ARCH_KEYS = ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab")


def architecture_from_entry(name: str, entry: dict) -> Architecture:
    arch = entry.get("architecture")
    if not arch:
        raise ConfigError(
            f"model '{name}': key 'architecture' is required to plan its memory and time "
            f"(parameters, layers, hidden, intermediate, heads, kv_heads, vocab and their source)"
        )
    return Architecture(
        **{k: arch[k] for k in ARCH_KEYS},
        tied_embeddings=arch.get("tied_embeddings", False),
        parameters=arch.get("parameters"),
        context=arch.get("context", 4096),
    )


def check_architecture(name: str, entry: dict) -> None:
    """A declared parameter count must equal what the shapes give (catches a mistyped shape)."""
    if not entry.get("architecture"):
        return
    arch = architecture_from_entry(name, entry)
    if arch.hidden % arch.heads or arch.heads % arch.kv_heads:
        raise ConfigError(
            f"model '{name}': key 'architecture' expected hidden ({arch.hidden}) divisible by heads "
            f"({arch.heads}) and heads divisible by kv_heads ({arch.kv_heads})"
        )
    if arch.parameters is not None and arch.parameters != arch.counted:
        raise ConfigError(
            f"model '{name}': key 'architecture.parameters' is {arch.parameters:,} but its shapes give "
            f"{arch.counted:,} (embeddings + layers x (attention + SwiGLU MLP + 2 norms) + final norm)"
        )


def model_key(config: dict, reference: str) -> str:
    """The `models:` key behind a model reference (a key, or recipe:<name> = that recipe's base model)."""
    seen = set()
    while reference.startswith("recipe:"):
        name = reference[len("recipe:") :]
        if name in seen or name not in config["recipes"]:
            raise ConfigError(f"model reference '{reference}' does not lead to a model in models:")
        seen.add(name)
        reference = config["recipes"][name]["model"]
    return reference


def recipe_architecture(config: dict, recipe_name: str, reference: str | None = None) -> Architecture:
    key = model_key(config, reference or config["recipes"][recipe_name]["model"])
    return architecture_from_entry(key, config["models"][key])


# ------------------------------------------------------------------------------------------------ GPUs


def gpu_spec(config: dict, name: str) -> dict:
    table = config.get("gpu_models") or {}
    if name not in table:
        raise ConfigError(f"unknown GPU model '{name}' (known: {', '.join(sorted(table)) or 'none'})")
    return table[name]


def check_gpu_model(config: dict, where: str, key: str, resources: dict) -> None:
    """`gpu_model` must name an entry of gpu_models: (memory-qualified, e.g. a100_80gb, never a bare a100)."""
    name = (resources or {}).get("gpu_model")
    if name is None:
        return
    table = config.get("gpu_models") or {}
    if name in table:
        return
    family = [k for k in sorted(table) if k.startswith(f"{name}_")]
    if family:
        raise ConfigError(
            f"{where}: key '{key}.gpu_model' is '{name}', which does not say how much memory the GPU "
            f"has; name it with its memory: {' or '.join(family)}"
        )
    raise ConfigError(
        f"{where}: key '{key}.gpu_model' names unknown GPU model '{name}' (known: "
        f"{', '.join(sorted(table)) or 'none; add it to gpu_models:'})"
    )


# ------------------------------------------------------------------------------------------------ estimates


@dataclass
class Estimate:
    """One stage of one recipe: bytes per device by part, the capacity they must fit, and the expected time."""

    recipe: str
    stage: str
    kind: str  # train | merge | eval | contamination
    nodes: int
    gpus: int
    gpu_model: str | None
    strategy: str | None
    parts: dict[str, float] = field(default_factory=dict)
    capacity: float = 0.0  # bytes per device (GPU memory, or the host's mem_gb for CPU-only stages)
    capacity_label: str = ""
    hours: float | None = None  # expected wall time (training stages on GPUs)
    tokens: float | None = None
    mfu: float | None = None
    runtime_min: int | None = None
    notes: list[str] = field(default_factory=list)
    problem: str | None = None  # a stage that cannot run as declared (besides not fitting)
    capped: bool = False  # the time estimate is the stage's GPU-hour budget
    host_gb: float | None = None  # peak host memory of the first node (GPU training stages; host_bytes)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.problem is None and self.total <= self.capacity

    @property
    def devices(self) -> str:
        if not self.gpus:
            return "CPU"
        nodes = f"{self.nodes} node(s) x " if self.nodes > 1 else ""
        return f"{nodes}{self.gpus} x {self.gpu_model or 'any GPU'}"


def _processes(resources: dict) -> int:
    return max(resources.get("nodes", 1), 1) * max(resources.get("gpus", 0), 1)


def _capacity(config: dict, resources: dict) -> tuple[float, str]:
    """Bytes one device offers: the named GPU's memory; an unnamed GPU is checked against the smallest known; the
    host's mem_gb for a CPU-only stage."""
    if not resources.get("gpus"):
        return resources.get("mem_gb", 8) * 1e9, f"host {resources.get('mem_gb', 8):g} GB"
    name = resources.get("gpu_model")
    if name is None:
        table = config.get("gpu_models") or {}
        if not table:
            return math.inf, "any GPU"
        name = min(table, key=lambda k: table[k]["memory_gib"])
        return table[name]["memory_gib"] * GIB, f"any GPU (smallest known: {name})"
    return gpu_spec(config, name)["memory_gib"] * GIB, name


def lora_modules(arch: Architecture, lora: dict) -> list[tuple[int, int]]:
    targets = lora.get("target_modules", [])
    names = LINEAR_MODULES if targets == "all-linear" else [t for t in targets if t in LINEAR_MODULES]
    shapes = arch.module_shapes()
    return [shapes[n] for n in names]


def trainable(arch: Architecture, settings: dict) -> tuple[int, int]:
    """(trainable parameters, trainable tensors) of a training stage."""
    if settings["method"] == "full":
        return arch.n, arch.tensors
    modules = lora_modules(arch, settings["lora"])
    r = settings["lora"]["r"]
    return arch.layers * sum(r * (a + b) for a, b in modules), arch.layers * 2 * len(modules)


def model_states(arch: Architecture, settings: dict, processes: int, strategy: str) -> dict[str, float]:
    """Weights, gradients and optimizer state per device (plus DDP's gradient buckets)."""
    params, tensors = trainable(arch, settings)
    shard = processes if strategy == "fsdp" else 1
    compute = COMPUTE_BYTES[settings["precision"]]
    quant = settings.get("quantization")
    if settings["method"] == "full":
        weights = 4.0 * arch.n
    elif quant:
        per_weight = 1.0 if quant["bits"] == 8 else NF4_BYTES[bool(quant.get("double_quant", True))]
        weights = arch.linear_params * per_weight + 4.0 * (arch.n - arch.linear_params) + 4.0 * params
    else:
        weights = compute * arch.n + 4.0 * params
    optimizer_name = settings.get("optimizer", "adamw_torch")
    if "8bit" in optimizer_name:
        optimizer = 2.0 * params
    elif optimizer_name.startswith("paged_"):
        optimizer = 0.0  # unified memory that pages out to the host under pressure (QLoRA paper)
    elif optimizer_name.startswith("adamw_bnb"):
        optimizer = 8.0 * params  # bitsandbytes keeps the step as a Python int
    else:
        optimizer = 8.0 * params + 4.0 * tensors
    parts = {"weights": weights / shard, "gradients": 4.0 * params / shard, "optimizer": optimizer / shard}
    if strategy == "ddp" and processes > 1:
        parts["ddp buckets"] = 4.0 * params
    return parts


def compute_copy(arch: Architecture, settings: dict, strategy: str) -> float:
    """Bytes of the weights in the dtype the matmuls use, beyond the stored ones (see the module docstring)."""
    compute = COMPUTE_BYTES[settings["precision"]]
    if settings.get("quantization"):
        return 2.0 * max(a * b for a, b in arch.module_shapes().values())  # one dequantized linear at a time
    if settings["method"] != "full":
        return 0.0
    if strategy == "fsdp":  # two gathered layers (current + prefetched), their gradients, the root unit
        return compute * (3 * arch.layer_params + arch.root_params)
    return 0.0 if compute == 4 else compute * arch.n


def layer_elements(arch: Architecture, settings: dict) -> int:
    """Elements one decoder layer saves for the backward pass, per token (autograd's saved tensors, counted on CPU
    in fp32 with saved_tensors_hooks: full 8h + 2kv + 4I; a frozen base with LoRA 6h + 2kv + 4I, plus 10h + I for
    the adapters' dropout copies and masks when dropout > 0; tests/test_plan.py checks these against live counts)."""
    h, kv, i = arch.hidden, arch.kv_dim, arch.intermediate
    if settings["method"] == "full":
        return 8 * h + 2 * kv + 4 * i
    dropout = settings["lora"].get("dropout", 0) > 0
    return 6 * h + 2 * kv + 4 * i + (10 * h + i if dropout else 0)


def micro_batch(settings: dict, processes: int) -> int:
    """The per-device micro batch the run will use (derive_batch: the recipe's global batch over the processes)."""
    return derive_batch(settings["global_batch_size"], settings["micro_batch_size"], processes)["micro_batch_size"]


def activations(arch: Architecture, settings: dict, strategy: str = "ddp", processes: int = 1) -> dict[str, float]:
    """Activation bytes per device at the stage's micro batch and max_seq_length (formula in the docstring)."""
    e = COMPUTE_BYTES[settings["precision"]]
    sequences = micro_batch(settings, processes) * (2 if settings.get("beta") is not None else 1)
    t = sequences * settings["max_seq_length"]
    layer = t * e * layer_elements(arch, settings)
    head = t * arch.vocab * LOSS_HEAD_BYTES
    if checkpointing(settings):
        # the residual stream stays fp32 under autocast over fp32 weights and on a quantized base (fp32 embeddings);
        # FSDP's bf16 parameter policy computes it in bf16
        residual = e if strategy == "fsdp" else 4
        return {"checkpoints": float(arch.layers * t * residual * arch.hidden), "activations": float(max(layer, head))}
    return {"activations": float(arch.layers * layer + head)}


def checkpointing(settings: dict) -> bool:
    """Gradient checkpointing: the stage's setting; always on for a quantized base (prepare_model_for_kbit_training)."""
    return bool(settings.get("gradient_checkpointing")) or bool(settings.get("quantization"))


def reference_bytes(arch: Architecture, settings: dict, processes: int, strategy: str) -> float:
    if settings.get("beta") is None or settings["method"] != "full" or settings.get("reference") == "precomputed":
        return 0.0
    return COMPUTE_BYTES[settings["precision"]] * arch.n / (processes if strategy == "fsdp" else 1)


def training_parts(arch: Architecture, settings: dict, processes: int, strategy: str) -> dict[str, float]:
    parts = model_states(arch, settings, processes, strategy)
    parts["compute copy"] = compute_copy(arch, settings, strategy)
    parts["reference"] = reference_bytes(arch, settings, processes, strategy)
    parts.update(activations(arch, settings, strategy, processes))
    return parts


def _resources(settings: dict) -> dict:
    return {
        "nodes": 1,
        "gpus": 0,
        "gpu_model": None,
        "mem_gb": 8,
        "runtime_min": 60,
        **(settings.get("resources") or {}),
    }


def mixture_rows(recipe: dict, part: str) -> tuple[int, int]:
    """(rows the mixture's sources name — count, else paper_count —, sources without either)."""
    rows, unknown = 0, 0
    for item in recipe.get("data", {}).get(part, {}).get("sources", []):
        n = item.get("count") or item.get("paper_count")
        if n:
            rows += n
        else:
            unknown += 1
    return rows, unknown


def mfu_key(settings: dict) -> str:
    quant = settings.get("quantization")
    if settings["method"] == "full":
        return "full"
    if quant:
        return "qlora" if quant["bits"] == 4 else "lora-int8"
    return "lora"


def training_time(
    config: dict, recipe: dict, stage: str, settings: dict, arch: Architecture, estimate: Estimate
) -> None:
    resources = _resources(settings)
    if not resources["gpus"] or not resources.get("gpu_model"):
        return
    rows, unknown = mixture_rows(recipe, stage)
    sequences = 2 if stage == "dpo" else 1
    per_sequence = min(ASSUMED_MEAN_TOKENS, settings["max_seq_length"])
    if settings.get("max_steps"):
        tokens = settings["max_steps"] * settings["global_batch_size"] * sequences * per_sequence
    else:
        tokens = rows * settings["epochs"] * sequences * per_sequence
    if unknown:
        estimate.notes.append(f"{unknown} source(s) of data.{stage} give no row count and are not in the tokens")
    flops = tokens * arch.n * (6 + (2 if stage == "dpo" else 0) + (2 if checkpointing(settings) else 0))
    devices = _processes(resources)
    mfu = ASSUMED_MFU[mfu_key(settings)]
    peak = gpu_spec(config, resources["gpu_model"])["bf16_tflops"] * 1e12
    hours = flops / (devices * peak * mfu) / 3600
    budget = settings.get("budget_gpu_hours")
    if budget and hours > budget / devices:
        estimate.notes.append(f"stops at its {budget:g} GPU-hour budget (the full run would take {hours:.1f} h)")
        hours = budget / devices
        estimate.capped = True
    estimate.hours, estimate.tokens, estimate.mfu = hours, tokens, mfu


def estimate_training(config: dict, recipe_name: str, stage: str, strategy: str | None = None) -> Estimate:
    recipe = config["recipes"][recipe_name]
    settings = recipe["stages"][stage]
    arch = recipe_architecture(config, recipe_name)
    resources = _resources(settings)
    processes = _processes(resources) if resources["gpus"] else 1
    strategy = strategy or choose_strategy(config, recipe_name, stage)
    capacity, label = _capacity(config, resources)
    est = Estimate(
        recipe_name,
        stage,
        "train",
        resources["nodes"],
        resources["gpus"],
        resources["gpu_model"],
        strategy,
        training_parts(arch, settings, processes, strategy),
        capacity,
        label,
        runtime_min=resources["runtime_min"],
    )
    est.parts["overhead"] = OVERHEAD_BYTES if resources["gpus"] else HOST_OVERHEAD_BYTES
    if settings.get("quantization") and settings["quantization"]["bits"] == 8 and not resources["gpus"]:
        est.problem = "8-bit loading (bitsandbytes LLM.int8) needs a CUDA GPU and the stage declares none"
    elif settings.get("quantization") and strategy == "fsdp" and settings["quantization"]["bits"] == 8:
        est.problem = "an 8-bit (LLM.int8) base cannot be sharded with FSDP; use ddp with a GPU that holds it"
    elif resources["gpus"]:
        host = host_bytes(arch, settings, resources, strategy)
        est.host_gb = host / 1e9
        if host > resources["mem_gb"] * 1e9:
            loaders = "rank 0 loads" if host_copies(settings, resources, strategy) == 1 else "every process loads"
            est.problem = (
                f"the first node's host memory needs an estimated {host / 1e9:.0f} GB ({loaders} the model "
                f"before it is placed or sharded, {HOST_PER_PROCESS_GB:g} GB per process) and mem_gb "
                f"is {resources['mem_gb']:g}"
            )
    training_time(config, recipe, stage, settings, arch, est)
    return est


HOST_PER_PROCESS_GB = 6  # a training process's Python, torch, CUDA host allocations, tokenizer and data


def host_bytes(arch: Architecture, settings: dict, resources: dict, strategy: str) -> float:
    """Peak host memory of a GPU training job's first node (the one that holds the most), against its mem_gb.

    Every process loads its model on the host before it is placed or sharded: the policy (fp32 master weights for
    full fine-tuning, the compute dtype for a LoRA base; a quantized base is quantized onto its GPU as it loads) and,
    for a full-fine-tune DPO, the frozen reference in the compute dtype (precomputed or not: it is loaded to compute
    the log-probs). Under DDP that is every process of the node at once. Under FSDP rank-0 loading
    (rank0_loads) only rank 0, on the first node, reads them (the other ranks hold untouched
    placeholders and receive their shards by broadcast): its peak is the policy and the reference whole (the
    reference is sharded before training starts, the policy when it does), plus its shards on the way to the GPU.
    Plus HOST_PER_PROCESS_GB for each process of the node.
    """
    if settings["method"] == "full":
        copy = 4.0 * arch.n
    else:
        copy = 0.0 if settings.get("quantization") else COMPUTE_BYTES[settings["precision"]] * arch.n
    if settings.get("beta") is not None and settings["method"] == "full":
        copy += COMPUTE_BYTES[settings["precision"]] * arch.n
    return host_copies(settings, resources, strategy) * copy + resources["gpus"] * HOST_PER_PROCESS_GB * 1e9


def rank0_loads(stage: dict, processes: int, strategy: str) -> bool:
    """Whether only rank 0 loads the real weights (the others build placeholders: train.common.empty_model).

    Under FSDP with more than one process, for an unquantized full fine-tune: every rank holding an fp32 copy on
    the host (plus DPO's reference) is 8 x 276 GB for a 70B model on an 8-GPU node. accelerate's
    `cpu_ram_efficient_loading` then shards the model on the meta device and broadcasts rank 0's weights into them
    (accelerate.utils.fsdp_utils.fsdp2_prepare_model / fsdp2_load_full_state_dict). transformers' own switch for
    this (FSDP_CPU_RAM_EFFICIENT_LOADING in from_pretrained) does not help here: transformers 5 still reads the
    full weights on the other ranks and then replaces them with zeros, and it only applies to models loaded after the
    training arguments exist, which the policy is not.
    """
    return strategy == "fsdp" and processes > 1 and stage["method"] == "full" and not stage.get("quantization")


def host_copies(settings: dict, resources: dict, strategy: str) -> int:
    """How many processes of the first node load the model whole: rank 0 alone under FSDP rank-0 loading, else all."""
    return 1 if rank0_loads(settings, _processes(resources), strategy) else resources["gpus"]


MERGE_SHARD_BYTES = 2 * GIB  # the streaming QLoRA merge's output shard, filled in memory, then written
IN_FLIGHT_BYTES = 24  # per element of the tensor being merged: its read, cast, 4-bit, dequantized, delta
# and merged copies (at most fp32 each; menagerie/dequantize_merge.py)


def largest_tensor(arch: Architecture) -> int:
    """Elements of the model's largest tensor: the embeddings (or LM head) or the largest linear weight."""
    return max(arch.vocab * arch.hidden, max(a * b for a, b in arch.module_shapes().values()))


def estimate_merge(config: dict, recipe_name: str) -> Estimate:
    """Fold an adapter into its target, on the host (menagerie/merge.py uses no GPU). A plain merge loads the target
    in the merge dtype with its fp32 adapters; a QLoRA dequantize-merge streams one tensor at a time (quantize,
    dequantize, add the delta, write), so it holds one output shard, the tensor in flight and the adapter."""
    recipe = config["recipes"][recipe_name]
    merge = recipe["stages"]["merge"]
    resources = _resources(merge)
    target = merge.get("into") or recipe["model"]
    arch = recipe_architecture(config, recipe_name, target)
    source_name = merge.get("adapter_from") or recipe_name
    source = config["recipes"].get(source_name, recipe)
    trained = next((source["stages"][s] for s in ("dpo", "sft") if (source["stages"].get(s) or {}).get("lora")), None)
    adapter = 4.0 * trainable(arch, trained)[0] if trained else 0.0
    combined = len((merge.get("combine") or {}).get("adapters", []))
    streamed = bool(merge.get("dequantize_base")) and not combined
    if streamed:
        parts = {
            "output shard": float(MERGE_SHARD_BYTES),
            "tensor in flight": IN_FLIGHT_BYTES * largest_tensor(arch),
            "adapters": adapter,
        }
    else:
        parts = {"weights": DTYPE_BYTES[merge.get("dtype", "bfloat16")] * arch.n, "adapters": adapter * (1 + combined)}
    parts["overhead"] = HOST_OVERHEAD_BYTES
    est = Estimate(
        recipe_name,
        "merge",
        "merge",
        resources["nodes"],
        resources["gpus"],
        resources["gpu_model"],
        None,
        parts,
        resources["mem_gb"] * 1e9,
        f"host {resources['mem_gb']:g} GB",
        runtime_min=resources["runtime_min"],
    )
    if streamed:
        est.notes.append("QLoRA dequantize-merge streamed on the CPU, one tensor at a time")
    if resources["gpus"]:
        est.notes.append(f"declares {resources['gpus']} GPU(s), which the merge does not use (it runs on the host)")
    return est


def estimate_inference(
    config: dict, recipe_name: str, stage: str, model_ref: str, resources: dict, dtype: str, backend: str
) -> Estimate:
    """Inference: the weights in `dtype` split over `gpus` (vLLM tensor parallel), a KV cache for one sequence of the
    model's full context, under vLLM's default 90 % share of each GPU."""
    resources = _resources({"resources": resources})
    key = model_key(config, model_ref)
    arch = architecture_from_entry(key, config["models"][key])
    shards = max(resources["gpus"], 1)
    e = DTYPE_BYTES[dtype]
    kv_cache = 2 * arch.layers * arch.kv_dim * e * arch.context
    parts = {
        "weights": e * arch.n / shards,
        "kv cache": kv_cache / shards,
        "overhead": OVERHEAD_BYTES if resources["gpus"] else HOST_OVERHEAD_BYTES,
    }
    capacity, label = _capacity(config, resources)
    if resources["gpus"] and backend == "vllm":
        capacity *= 0.9
        label += " x 0.9 (vLLM)"
    if resources["gpus"] and arch.heads % shards:
        problem = f"vLLM splits the {arch.heads} attention heads over the {shards} GPUs, which does not divide them"
    else:
        problem = None
    return Estimate(
        recipe_name,
        stage,
        "eval",
        resources["nodes"],
        resources["gpus"],
        resources["gpu_model"],
        None,
        parts,
        capacity,
        label,
        runtime_min=resources["runtime_min"],
        problem=problem,
    )


def estimate_eval(config: dict, recipe_name: str) -> Estimate:
    recipe = config["recipes"][recipe_name]
    settings = recipe["eval"]
    return estimate_inference(
        config,
        recipe_name,
        "eval",
        recipe["model"],
        settings.get("resources") or {},
        settings.get("dtype", "bfloat16"),
        settings.get("backend", "vllm"),
    )


def estimate_ni_inference(config: dict, recipe_name: str) -> list[Estimate]:
    """Birbal's NI sampling: few-shot inference of the sampling model over the task files, once per distinct
    (model, inference settings) among the recipe's ni_sampling datasets (menagerie/data/ni_sampling.py)."""
    seen, estimates = set(), []
    for part in config["recipes"][recipe_name].get("data", {}).values():
        for item in part["sources"]:
            entry = config["datasets"][item["dataset"]]
            if entry.get("source") != "ni_sampling":
                continue
            inference = entry["ni"]["inference"]
            key = (entry["model"], repr(sorted(inference.items())))
            if key in seen:
                continue
            seen.add(key)
            estimates.append(
                estimate_inference(
                    config,
                    recipe_name,
                    f"ni inference ({entry['model']})",
                    entry["model"],
                    inference.get("resources") or {},
                    config["models"][entry["model"]].get("dtype", "bfloat16"),
                    inference.get("backend", "vllm"),
                )
            )
    return estimates


MINILM_PARAMS = 22_713_216  # sentence-transformers/all-MiniLM-L6-v2


def estimate_contamination(config: dict, recipe_name: str) -> Estimate:
    """The gate embeds texts with all-MiniLM-L6-v2 (fp32, batches of short texts): under a GiB on any device."""
    resources = _resources(config["recipes"][recipe_name].get("contamination") or {})
    parts = {"weights": 4.0 * MINILM_PARAMS, "overhead": OVERHEAD_BYTES if resources["gpus"] else HOST_OVERHEAD_BYTES}
    capacity, label = _capacity(config, resources)
    return Estimate(
        recipe_name,
        "contamination",
        "contamination",
        resources["nodes"],
        resources["gpus"],
        resources["gpu_model"],
        None,
        parts,
        capacity,
        label,
        runtime_min=resources["runtime_min"],
    )


def choose_strategy(config: dict, recipe_name: str, stage: str) -> str:
    """`ddp` or `fsdp` for a training stage: its explicit `strategy:` if set; CPU-only and one-GPU stages ddp (there is
    nothing to shard over); else ddp when the replicated model fits the declared GPUs, fsdp when it does not."""
    settings = config["recipes"][recipe_name]["stages"][stage]
    if settings.get("strategy"):
        return settings["strategy"]
    resources = _resources(settings)
    if not resources["gpus"] or _processes(resources) == 1:
        return "ddp"
    ddp = estimate_training(config, recipe_name, stage, "ddp")
    # the GPU bytes alone decide: a host-memory shortfall (est.problem) is the same under either strategy and is
    # reported as such, not answered with a sharding the GPUs do not need
    return "ddp" if ddp.total <= ddp.capacity else "fsdp"


def plan_recipe(config: dict, recipe_name: str) -> list[Estimate]:
    """Every stage of a recipe the workflow runs: NI-sampling inference, contamination, sft, dpo, merge, eval."""
    recipe = config["recipes"][recipe_name]
    stages = recipe["stages"]
    estimates = []
    estimates += estimate_ni_inference(config, recipe_name)
    if recipe.get("data"):
        estimates.append(estimate_contamination(config, recipe_name))
    for stage in ("sft", "dpo"):
        if stages.get(stage):
            estimates.append(estimate_training(config, recipe_name, stage))
    if stages.get("merge"):
        estimates.append(estimate_merge(config, recipe_name))
    estimates.append(estimate_eval(config, recipe_name))
    return estimates


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def refusal(est: Estimate) -> str:
    """The one sentence a stage that cannot run as declared stops the dry run with."""
    strategy = f" under {est.strategy}" if est.strategy else ""
    if est.problem:
        return f"recipe '{est.recipe}': stage {est.stage} cannot run on {est.devices}{strategy}: {est.problem}"
    declared = (
        f"{est.devices} with {gib(est.capacity)} each"
        if est.gpus and est.kind != "merge"
        else f"{est.capacity_label} (a merge runs on the host)"
        if est.kind == "merge"
        else f"no GPU ({est.capacity_label})"
    )
    return (
        f"recipe '{est.recipe}': stage {est.stage} needs an estimated {gib(est.total)} per device{strategy} "
        f"({', '.join(f'{k} {gib(v)}' for k, v in est.parts.items() if v >= GIB / 20)}) but declares "
        f"{declared}; declare more or larger GPUs, nodes or mem_gb (`make plan RECIPE={est.recipe}`)"
    )


def check_plan(config: dict, recipes: list[str] | None = None) -> None:
    """Stop (ConfigError, one sentence) at the first stage of `recipes` (default: all) that cannot fit."""
    for name in recipes or list(config["recipes"]):
        for est in plan_recipe(config, name):
            if not est.fits:
                raise ConfigError(refusal(est))


# ------------------------------------------------------------------------------------------------ report


def _hours(h: float | None) -> str:
    if h is None:
        return "-"
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


def recommended_runtime_min(est: Estimate) -> int | None:
    """Minutes to declare for a training stage: the estimate x RUNTIME_MARGIN, rounded up to the hour; a stage that
    stops at its GPU-hour budget: the budget plus an hour (loading, the last evaluation and save)."""
    if est.hours is None:
        return None
    if est.capped:
        return int(math.ceil(est.hours) + 1) * 60
    return int(math.ceil(est.hours * RUNTIME_MARGIN)) * 60


def job_chain_note(est: Estimate, env=None) -> str | None:
    """For a stage declared longer than one SLURM job may run (menagerie.resources.max_job_runtime): how many jobs,
    each resuming from the last checkpoint, it takes."""
    from menagerie.resources import jobs_needed, max_job_runtime

    if est.runtime_min is None or jobs_needed(est.runtime_min, env) == 1:
        return None
    n, limit = jobs_needed(est.runtime_min, env), max_job_runtime(env)
    return (
        f"runtime_min {est.runtime_min} exceeds the per-job limit of {limit} min (MENAGERIE_SLURM_MAX_RUNTIME_MIN):"
        f" it runs as {n} SLURM jobs, each resuming from the last checkpoint; the profile's retries give 3, "
        f"then rerun the same snakemake command (or raise `retries` to {n - 1})"
    )


def runtime_problem(est: Estimate) -> str | None:
    """A training stage whose declared runtime_min is below the planner's estimate."""
    if est.hours is None or est.runtime_min is None or est.runtime_min >= est.hours * 60:
        return None
    return (
        f"recipe '{est.recipe}': stage {est.stage} declares runtime_min {est.runtime_min} but the planner "
        f"estimates {est.hours * 60:.0f} min at MFU {est.mfu:.2f}"
    )


HEADER = (
    "| recipe | stage | devices | strategy | weights | grads | optimizer | reference | activations | "
    "total / device | capacity | fits | tokens | est. time (MFU) | runtime_min |"
)


def table(estimates: list[Estimate]) -> str:
    """A markdown table, one row per stage; sizes in GiB per device."""
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for e in estimates:
        p = e.parts
        acts = p.get("activations", 0) + p.get("checkpoints", 0) + p.get("kv cache", 0)
        weights = (
            p.get("weights", 0)
            + p.get("compute copy", 0)
            + p.get("adapters", 0)
            + p.get("output shard", 0)
            + p.get("tensor in flight", 0)
        )
        cells = [
            e.recipe,
            e.stage,
            e.devices,
            e.strategy or "-",
            f"{weights / GIB:.1f}",
            f"{(p.get('gradients', 0) + p.get('ddp buckets', 0)) / GIB:.1f}",
            f"{p.get('optimizer', 0) / GIB:.1f}",
            f"{p.get('reference', 0) / GIB:.1f}",
            f"{acts / GIB:.1f}",
            f"{e.total / GIB:.1f}",
            f"{e.capacity / GIB:.1f} ({e.capacity_label})",
            "yes" if e.fits else "**NO**",
            f"{e.tokens / 1e6:,.0f}M" if e.tokens else "-",
            f"{_hours(e.hours)} ({e.mfu:.2f})" if e.hours is not None else "-",
            str(e.runtime_min),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def assumptions() -> str:
    mfu = ", ".join(f"{k} {v:.2f}" for k, v in ASSUMED_MFU.items())
    return (
        f"Sizes in GiB per device (weights include mixed precision's compute copy and LoRA adapters; activations "
        f"include gradient-checkpoint inputs and the loss head, for eval vLLM's KV cache of one full-context sequence; {OVERHEAD_BYTES / GIB:g} GiB overhead per GPU "
        f"is in the total). Time = tokens x 6 x params (+2 x params for DPO's reference forward, +2 x params "
        f"recomputed under gradient checkpointing) / (GPUs x peak "
        f"bf16 FLOP/s x MFU); assumed MFU: {mfu}; tokens = rows x epochs x sequences per row x "
        f"min({ASSUMED_MEAN_TOKENS}, max_seq_length) (assumed mean tokens per sequence), capped by a GPU-hour "
        f"budget."
    )
