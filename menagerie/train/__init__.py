"""Training stages: supervised fine-tuning (sft) and direct preference optimisation (dpo)."""
