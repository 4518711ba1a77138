"""menagerie: reproducible builds of published LLM fine-tuning recipes."""
