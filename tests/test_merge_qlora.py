"""The QLoRA merge on the CPU (menagerie/dequantize_merge.py): the adapter folds into dequant(quant(W)), the NF4
weights it was trained against, streamed tensor by tensor with bitsandbytes' CPU backend (no GPU anywhere).

References, all computed on this CPU: the NF4 code book of the QLoRA paper (by hand), bitsandbytes' own
quantize_4bit/dequantize_4bit, transformers' 4-bit loading + dequantize() + peft's merge_and_unload (the path that
needed CUDA before), peft's own merge into a bnb Linear4bit, and the PeftModel over the 4-bit base (what training
computed)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from menagerie.dequantize_merge import adapter_deltas, nf4_round_trip, quantized_weight_names, write_merged  # noqa: E402
from menagerie.errors import MenagerieError  # noqa: E402
from menagerie.merge import merge_adapter  # noqa: E402

# NF4: the 16 quantiles of N(0, 1) scaled to [-1, 1] (QLoRA paper, Appendix E; bitsandbytes' get_4bit_type("nf4"))
NF4_LEVELS = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
]
QUANT = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_tiny_tokenizer) -> dict:
    """The training tests' tiny random Llama (fp32 checkpoint) and a random LoRA adapter on all its linear layers."""
    from peft import LoraConfig, get_peft_model
    from tiny_models import build_tiny_llama
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("qlora")
    tokenizer = make_tiny_tokenizer(add_bos=True)
    build_tiny_llama(root / "base", tokenizer)
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LINEAR, init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(str(root / "base")), lora)
    with torch.no_grad():  # adapters as large as a trained one's effect, so a wrong base shows in the logits
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    model.save_pretrained(str(root / "adapter"))
    tokenizer.save_pretrained(str(root / "adapter"))
    return {"base": root / "base", "adapter": root / "adapter"}


def _tensors(directory) -> dict:
    from safetensors.torch import load_file

    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def _by_hand_delta(adapter_dir, name: str) -> torch.Tensor:
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    module = "base_model.model." + name.removesuffix(".weight")
    return (weights[f"{module}.lora_B.weight"] @ weights[f"{module}.lora_A.weight"]) * (cfg["lora_alpha"] / cfg["r"])


def _4bit_model(base_dir, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    from menagerie.dequantize_merge import bnb_4bit_config

    return AutoModelForCausalLM.from_pretrained(
        str(base_dir), dtype=dtype, quantization_config=bnb_4bit_config(QUANT), device_map={"": "cpu"}
    )


def test_transformers_quantizes_exactly_the_decoder_linear_weights(tiny):
    names = quantized_weight_names(tiny["base"], QUANT)
    assert names == {
        f"model.layers.{i}.{part}.{m}.weight"
        for i in range(2)
        for m in LINEAR
        for part in (["self_attn"] if m in LINEAR[:4] else ["mlp"])
    }  # lm_head and embeddings stay


@pytest.mark.parametrize("double_quant", [True, False])
def test_merged_weights_are_the_nf4_round_trip_plus_scale_b_a_by_hand(tiny, tmp_path, double_quant):
    """W' = dequant(quant(W)) + (alpha / r) B A: the NF4 part checked against the code book by hand (each block of 64
    is 16 levels times its largest magnitude), and bit for bit against bitsandbytes' quantize/dequantize."""
    quant = {**QUANT, "double_quant": double_quant}
    counts = write_merged(tiny["base"], tmp_path, "float32", quant, "float32", adapter_dir=tiny["adapter"])
    assert counts["quantized"] == counts["merged"] == 14
    base, merged = _tensors(tiny["base"]), _tensors(tmp_path)
    assert set(merged) == set(base)
    levels = torch.tensor(NF4_LEVELS)
    for name in quantized_weight_names(tiny["base"], quant):
        delta = _by_hand_delta(tiny["adapter"], name)
        assert delta.abs().max() > 1e-3
        rounded = merged[name] - delta
        blocks = rounded.reshape(-1, 64)
        scale = blocks.abs().amax(dim=1, keepdim=True)
        distance = ((blocks / scale).unsqueeze(-1) - levels).abs().amin(dim=-1)
        assert distance.max() < 1e-4, name  # every value sits on an NF4 level
        error = (rounded - base[name]).abs().reshape(-1, 64)
        assert (error <= scale * 0.17).all(), name  # within half the widest gap of its level
        assert not torch.allclose(rounded, base[name], atol=1e-4)  # and it is not the original weight
        from bitsandbytes.functional import dequantize_4bit, quantize_4bit

        packed, state = quantize_4bit(base[name], compress_statistics=double_quant, quant_type="nf4")
        expected = dequantize_4bit(packed, quant_state=state, quant_type="nf4") + delta
        torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6)
    for name in set(base) - quantized_weight_names(tiny["base"], quant):
        assert torch.equal(merged[name], base[name]), name  # norms, embeddings, LM head: untouched


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streamed_merge_equals_transformers_4bit_load_dequantize_and_peft_merge(tiny, tmp_path, dtype):
    """The path that needed CUDA (transformers loads the base in 4-bit, dequantize(), peft merge_and_unload), run on
    this CPU by bitsandbytes 0.50: the streamed merge writes the same weights, bit for bit."""
    from peft import PeftModel

    write_merged(tiny["base"], tmp_path, dtype, QUANT, dtype, adapter_dir=tiny["adapter"])
    model = _4bit_model(tiny["base"], getattr(torch, dtype)).dequantize()
    reference = PeftModel.from_pretrained(model.to(getattr(torch, dtype)), str(tiny["adapter"])).merge_and_unload()
    ours = _tensors(tmp_path)
    state = reference.state_dict()
    for name, tensor in ours.items():
        assert tensor.dtype == getattr(torch, dtype)
        assert torch.equal(tensor, state[name]), name


def test_peft_merge_into_a_4bit_layer_starts_from_the_same_sum_then_requantizes(tiny, tmp_path):
    """peft's merge into a bnb Linear4bit computes dequant(quant(W)) + delta too, then quantizes the sum again (4-bit
    out, the adapter's precision lost): its result is exactly quant(our merged weight)."""
    from bitsandbytes.functional import dequantize_4bit
    from peft import PeftModel

    write_merged(tiny["base"], tmp_path, "float32", QUANT, "float32", adapter_dir=tiny["adapter"])
    ours = _tensors(tmp_path)
    peft_merged = PeftModel.from_pretrained(_4bit_model(tiny["base"]), str(tiny["adapter"])).merge_and_unload()
    layer = peft_merged.model.layers[0].self_attn.q_proj
    theirs = dequantize_4bit(layer.weight.data, quant_state=layer.weight.quant_state, quant_type="nf4")
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(theirs, nf4_round_trip(ours[name], QUANT), rtol=0, atol=1e-6)
    assert not torch.allclose(theirs, ours[name], atol=1e-4)  # the requantized one lost the adapter's detail


def test_merged_model_computes_what_the_adapter_on_the_4bit_base_computed(tiny, tmp_path):
    """Logits of the merged checkpoint equal the PeftModel over the 4-bit base (training's forward) up to bf16
    rounding, ten times closer than the adapter merged into the original full-precision weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merge_adapter(
        tiny["adapter"],
        tiny["base"],
        tmp_path / "merged",
        "float32",
        "qlora",
        dequantize_from={**QUANT, "weights_dtype": "float32"},
    )
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    trained = PeftModel.from_pretrained(_4bit_model(tiny["base"]), str(tiny["adapter"]))
    naive = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny["base"])), str(tiny["adapter"])
    ).merge_and_unload()
    torch.manual_seed(0)
    ids = torch.randint(5, 400, (2, 12))
    with torch.no_grad():
        got, want, full = (m(input_ids=ids).logits for m in (merged, trained, naive))
    # in inference (eval, no grad) on an AVX512-bf16 CPU, bitsandbytes' Linear4bit repacks its weight and multiplies
    # in bf16 whatever the compute dtype (measured: a layer's output differs from the fp32 product of the same
    # dequantized weight exactly as a bf16 product does), so the 4-bit forward is matched to bf16 rounding; folding
    # into the original W misses by the quantization error, over 10x more
    off, naive_off = (got - want).abs().max(), (got - full).abs().max()
    assert off < 2e-3 and off < 0.1 * naive_off, (off, naive_off)
    record = json.loads((tmp_path / "merged" / "provenance.json").read_text())
    assert record["streamed"] == {"tensors": 21, "quantized": 14, "merged": 14, "shards": 1}
    assert record["dequantized_from"]["weights_dtype"] == "float32"
    assert "dequantized from its nf4 4-bit quantization" in (tmp_path / "merged" / "README.md").read_text()


def test_small_shards_write_an_index_and_the_same_weights(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    write_merged(tiny["base"], tmp_path / "one", "float32", QUANT, "float32", adapter_dir=tiny["adapter"])
    counts = write_merged(
        tiny["base"], tmp_path / "many", "float32", QUANT, "float32", adapter_dir=tiny["adapter"], shard_bytes=100_000
    )
    assert counts["shards"] > 2
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == counts["shards"]
    one, many = _tensors(tmp_path / "one"), _tensors(tmp_path / "many")
    assert one.keys() == many.keys() and all(torch.equal(one[k], many[k]) for k in one)
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "many"))  # a Hugging Face checkpoint transformers loads


def test_an_adapter_with_dora_is_refused_in_one_sentence(tiny, tmp_path):
    adapter = tmp_path / "dora"
    adapter.mkdir()
    cfg = json.loads((tiny["adapter"] / "adapter_config.json").read_text()) | {"use_dora": True}
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(MenagerieError, match="sets use_dora: the QLoRA merge folds plain LoRA adapters"):
        adapter_deltas(adapter)
