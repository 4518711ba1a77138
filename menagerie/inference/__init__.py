"""Inference: the generation runner (vLLM through lm-eval's model interface) shared by evaluation, judges and
Birbal's NI sampling, and the NI predictions it makes."""
