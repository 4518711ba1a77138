"""Helpers for tests that run lm-eval's real task pipeline without a model.

`ScriptedLM` is not a language model: it answers every request by a fixed rule (a preferred continuation, canned
generations), so the task configs, prompt rendering, filters, metrics and group aggregation under test are lm-eval's
own, with outcomes a test can compute by hand. `tasks_index` builds lm-eval's TaskManager over only the built-in
task folders a test needs plus the repo's tasks/ (the full index takes ~20 s to build).
"""

from __future__ import annotations

from pathlib import Path

from lm_eval.api.model import LM

BUILTIN_DIRS = (
    "mmlu/default",
    "bbh/cot_fewshot",
    "tydiqa",
    "arc",
    "hellaswag",
    "truthfulqa",
    "winogrande",
    "gsm8k",
    "leaderboard",
    "bigbench/generate_until",
    "bbq",
)


def tasks_index(*dirs: str):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from menagerie.evaluate.harness import TASKS_DIR

    root = Path(lm_eval.__file__).parent / "tasks"
    return TaskManager(
        include_path=[str(root / d) for d in (dirs or BUILTIN_DIRS)] + [str(TASKS_DIR)], include_defaults=False
    )


class ScriptedLM(LM):
    """Prefers the continuation `prefer` in every loglikelihood request; generates `generations[i]` for the i-th
    prompt containing key i (or `default`); renders chats with `chat` (a callable) when given."""

    def __init__(self, prefer: str = " A", generations: dict[str, str] | None = None, default: str = "", chat=None):
        super().__init__()
        self.prefer = prefer
        self.generations = generations or {}
        self.default = default
        self.chat = chat
        self.prompts: list[str] = []

    tokenizer_name = "scripted"

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return [(0.0 if r.args[1] == self.prefer else -1.0, r.args[1] == self.prefer) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return [-1.0 for _ in requests]

    def generate_until(self, requests, disable_tqdm: bool = False):
        out = []
        for request in requests:
            prompt = request.args[0]
            self.prompts.append(prompt)
            out.append(next((text for key, text in self.generations.items() if key in prompt), self.default))
        return out

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return self.chat(chat_history, add_generation_prompt)

    def chat_template(self, chat_template=False):
        return "scripted"
