"""The vLLM engine: the bundle's merged checkpoint, fed finished prompt embeddings.

`LLM(model=<bundle>/llm, enable_prompt_embeds=True)` fed `{"prompt_embeds": (seq, hidden)}` prompts
(docs/BATCH.md, "The pipeline") in one of two ways: one `generate` call per batch, or streamed,
a request at a time through the engine's `add_request`/`step` (engines/batch/llm_stage.py), so a
request enters as soon as its vision rows exist and leaves when it finishes. vLLM schedules
with continuous batching and paged attention either way; we only hand it work.

The tokenizer is not initialised inside vLLM (`skip_tokenizer_init`): prompts arrive as
embeddings, stop tokens come from the bundle, and token ids are decoded with the bundle's
tokenizer exactly as the transformers engine does, so the two cannot disagree on text.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from multiprocessing import resource_tracker
from typing import Any

import torch

from vlmcap.bundle import Bundle
from vlmcap.config.schema import VllmConfig
from vlmcap.engines.runtime.quant_support import vllm_dtype
from vlmcap.engines.runtime.watchdog import EngineWatchdog, descendants
from vlmcap.environment import unguarded_main_script
from vlmcap.errors import ConfigError, ModelError
from vlmcap.model.embeddings import EmbeddedBatch
from vlmcap.model.generation import Generation, GenerationParams, finish_reason

log = logging.getLogger(__name__)

PENALTY_CRASH = (
    "vLLM's engine can crash on prompt_embeds batches of mixed lengths when a repetition, presence or "
    "frequency penalty is set (vllm-project/vllm#57719, #28307)"
)


VLLM_MAX_TEMPERATURE = 2.0  # SamplingParams refuses more, per request: after the engine started


def check_params_safe(params: GenerationParams) -> None:
    """Refuse what vLLM would refuse mid-run, or is known to crash on with prompt embeds, before the
    engine starts."""
    if params.repetition_penalty != 1.0:
        raise ConfigError(
            f"--repetition-penalty {params.repetition_penalty} with --llm-backend vllm: {PENALTY_CRASH}; "
            "leave it at 1.0 or use --llm-backend transformers"
        )
    if params.temperature > VLLM_MAX_TEMPERATURE:
        raise ConfigError(
            f"--temperature {params.temperature} with --llm-backend vllm: vLLM accepts 0 to "
            f"{VLLM_MAX_TEMPERATURE}; lower it or use --llm-backend transformers"
        )


def vllm_spawn_problem() -> str | None:
    """Why vLLM's engine cannot start from this process's main script (one sentence), or None: its CPU
    build starts the engine in a spawned process, which would run an unguarded script again
    (vlmcap.environment.unguarded_main_script)."""
    script = unguarded_main_script()
    if script is None:
        return None
    if not os.path.isfile(script):
        return f"{script}: vLLM starts its engine in a spawned process, which would run this main script again"
    return (
        f"{script}: vLLM starts its engine in a spawned process, which runs this script again from the top "
        'since it has no `if __name__ == "__main__":` guard'
    )


def check_vllm_can_spawn() -> None:
    """`llm_backend="vllm"` from an unguarded script: ConfigError before any work, with the two ways out."""
    problem = vllm_spawn_problem()
    if problem:
        raise ConfigError(f"{problem}; put the script's work under that guard, or use llm_backend='transformers'")


@contextlib.contextmanager
def _cpu_cores(threads: int | None) -> Iterator[list[int] | None]:
    """vLLM's CPU build binds its threads to every core of the NUMA node unless told (its engine process
    reads VLLM_CPU_OMP_THREADS_BIND when it starts), over the cores the vision engine computes on in
    this process: it gets its share, the last `threads` cores. A binding the user set is left alone.

    Its engine-core process, which schedules and polls the worker (half a core busy while it
    generates), is started on those cores too: processes inherit the affinity of the thread that
    starts them, so this thread holds the LLM's cores while vLLM starts, then gets its own back.
    Yields the LLM's cores (None where nothing was bound), which the vision stage keeps off.
    """
    name = "VLLM_CPU_OMP_THREADS_BIND"
    if not threads or name in os.environ:
        yield None
        return
    own = os.sched_getaffinity(0)
    cores = sorted(own)[-threads:]
    os.environ[name] = ",".join(map(str, cores))
    os.sched_setaffinity(0, cores)  # this thread only (Linux): the rest of the process keeps its cores
    try:
        yield cores
    finally:
        os.sched_setaffinity(0, own)
        os.environ.pop(name, None)


class VllmEngine:
    def __init__(
        self,
        bundle: Bundle,
        options: VllmConfig,
        max_prompt_len: int,
        max_new_tokens: int,
        max_seqs: int,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError as e:
            raise ModelError(f"--llm-backend vllm: vLLM cannot be imported ({e})") from None
        kwargs: dict[str, Any] = {
            "model": str(bundle.llm_dir),
            "skip_tokenizer_init": True,
            "enable_prompt_embeds": True,
            "trust_remote_code": False,
            "tensor_parallel_size": options.tensor_parallel_size,
            "dtype": vllm_dtype(bundle, options.dtype),
            "max_model_len": options.max_model_len or _round_up(max_prompt_len + max_new_tokens, 256),
            "enforce_eager": options.enforce_eager,
            "seed": seed,
            # The weight-loading bar, shown when library progress bars are (vlmcap -v; vlmcap/cli/app.py).
            "use_tqdm_on_load": os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") != "1",
        }
        for key in ("gpu_memory_utilization", "quantization", "max_num_seqs"):
            if getattr(options, key) is not None:
                kwargs[key] = getattr(options, key)
        if options.kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(options.kv_cache_gib * 2**30)
        elif _on_cpu() and options.gpu_memory_utilization is None:
            # vLLM's CPU build reserves gpu_memory_utilization (default 0.92) of all RAM up front and
            # refuses to start when that much is not free; size the cache for our batches instead.
            seqs = options.max_num_seqs or max_seqs
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes(bundle, kwargs["max_model_len"], seqs)
        log.info("starting vLLM: %s", kwargs)
        self.watchdog = EngineWatchdog()
        # This process's multiprocessing resource tracker is started on first use, which vLLM's start
        # may be: started now, it is not taken for one of vLLM's processes (and killed at close).
        resource_tracker.ensure_running()
        before = descendants(os.getpid())
        try:
            with _cpu_cores(threads if _on_cpu() else None) as cores:
                self.llm = LLM(**kwargs)
                self.cores = cores  # the CPU cores vLLM computes on (None: not bound by vlmcap)
        finally:  # the processes vLLM started (also when it failed half-way) die with this run
            self.watchdog.guard(descendants(os.getpid()) - before)
        self.max_model_len = kwargs["max_model_len"]
        self._params: dict[str, GenerationParams] = {}  # streaming: each request's own, until it finishes
        scheme = bundle.manifest.llm.quantization
        self.name = f"vllm ({kwargs['dtype']}{', ' + scheme.scheme if scheme else ''})"

    def generate(self, batch: EmbeddedBatch, params: GenerationParams) -> list[Generation]:
        prompts = [{"prompt_embeds": batch.unpadded(i)} for i in range(len(batch.lengths))]
        outputs = self.llm.generate(prompts, _sampling(params), use_tqdm=False)
        return [_generation(out, params) for out in outputs]

    # Streaming (engines/batch/llm_stage.py): the same engine driven one request at a time through
    # LLMEngine.add_request/step, which is what `LLM.generate` does inside, minus its barrier.

    def capacity(self) -> int:
        """Full-length sequences the KV cache holds, at most the scheduler's max_num_seqs."""
        config = self.llm.llm_engine.vllm_config
        blocks = config.cache_config.num_gpu_blocks or 0
        fits = blocks * config.cache_config.block_size // self.max_model_len
        return max(1, min(fits, config.scheduler_config.max_num_seqs))

    def submit(self, key: str, prompt_embeds: torch.Tensor, params: GenerationParams) -> None:
        from vllm.sampling_params import RequestOutputKind

        sampling = _sampling(params)
        sampling.output_kind = RequestOutputKind.FINAL_ONLY  # step() returns a request once, when it finishes
        self._params[key] = params
        self.llm.llm_engine.add_request(key, {"prompt_embeds": prompt_embeds}, sampling)

    def step(self) -> list[tuple[str, Generation]]:
        finished = []
        for out in self.llm.llm_engine.step():
            if out.finished:
                finished.append((out.request_id, _generation(out, self._params.pop(out.request_id))))
        return finished

    def abort(self, keys: list[str]) -> None:
        self.llm.llm_engine.abort_request(keys)
        for key in keys:
            self._params.pop(key, None)

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()  # stops the engine-core process now rather than at interpreter exit
        del self.llm
        self.watchdog.release()


def _sampling(params: GenerationParams):
    from vllm import SamplingParams

    check_params_safe(params)
    return SamplingParams(
        max_tokens=params.max_new_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        stop_token_ids=[] if params.ignore_eos else params.stop_token_ids,
        ignore_eos=params.ignore_eos,  # vLLM also stops at the model's own EOS unless told not to
        detokenize=False,
    )


def _generation(out, params: GenerationParams) -> Generation:
    completion = out.outputs[0]
    if completion.finish_reason not in ("stop", "length"):
        # "abort": the engine was stopped (a signal to the process group) mid-request; the
        # partial text must not be written as a caption.
        raise ModelError(f"vLLM ended a request with finish_reason={completion.finish_reason!r}")
    ids = list(completion.token_ids)
    return Generation(ids, finish_reason(ids, params))


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def kv_cache_bytes(bundle: Bundle, max_model_len: int, num_seqs: int) -> int:
    """KV cache for `num_seqs` sequences of `max_model_len` tokens, +25% and at least 64 MiB."""
    import json

    cfg = json.loads((bundle.llm_dir / "config.json").read_text())
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    width = {"float32": 4}.get(bundle.manifest.llm.dtype, 2)
    per_token = 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * width
    return max(64 << 20, int(1.25 * per_token * max_model_len * num_seqs))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
