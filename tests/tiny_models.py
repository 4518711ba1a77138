"""Tiny models built from config for tests: no hub, seconds to train on CPU."""


def build_tiny_llama(out, tokenizer, vocab_size=None, hidden=64):
    """A tiny random Llama (2 layers, hidden 64) saved with `tokenizer` into `out`: the training tests' model.

    `vocab_size` / `hidden` widen it (embedding rows past the tokenizer unused) where a test needs measurable bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=vocab_size or len(tokenizer),
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
