"""`vlmcap bench llm`: LLM decode tokens/s of a bundle through an LLM engine, and the LLM's bytes.

The request is the real sequence layout (chat prompt around tokens_per_video vision rows), with
vision rows drawn from the bundle's own embedding table so their magnitude is a text row's. Decode
rate = extra tokens / extra time between a 1-token and an N-token generation of the same batch, so
prefill and engine overheads cancel. Every generated token is counted (a stop token ends a row early).
"""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from vlmcap.bench.timer import time_call
from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.runtime.engines import open_llm_engine
from vlmcap.engines.runtime.llm import LLMEngine
from vlmcap.model.embeddings import EmbeddedBatch, build_inputs_embeds
from vlmcap.model.generation import GenerationParams
from vlmcap.model.prompt import PromptBuilder
from vlmcap.model.text_rows import EmbeddingTable


def _request(bundle: Bundle, batch_videos: int) -> EmbeddedBatch:
    llm, prompt = bundle.manifest.llm, bundle.manifest.prompt
    table = EmbeddingTable(bundle.llm_dir, llm.embed_tokens, llm.embed_scale)
    tokenizer = AutoTokenizer.from_pretrained(bundle.llm_dir, trust_remote_code=False)
    tokens = PromptBuilder(tokenizer, prompt.default_prompt, prompt.system_prompt).encode(None)
    ids = torch.randint(
        0, llm.vocab_size, (batch_videos, bundle.manifest.tokens_per_video), generator=torch.Generator().manual_seed(0)
    )
    return build_inputs_embeds(
        table(ids.flatten()).reshape(*ids.shape, -1).float(), [tokens] * batch_videos, table, "left"
    )


def _timed(engine: LLMEngine, batch: EmbeddedBatch, params: GenerationParams, repeat: int) -> tuple[float, int]:
    """Median wall time of `repeat` calls, and the tokens one call generated."""
    generated = 0

    def call() -> None:
        nonlocal generated
        generated = sum(len(g.token_ids) for g in engine.generate(batch, params))

    return time_call(call, repeat=repeat, warmup=0).median_s, generated


def bench_llm(bundle: Bundle, settings: BatchConfig, batch_videos: int, new_tokens: int, repeat: int) -> dict:
    batch = _request(bundle, batch_videos)
    stop = list(bundle.manifest.generation.stop_token_ids)
    long = GenerationParams(max_new_tokens=new_tokens, stop_token_ids=stop)
    engine = open_llm_engine(bundle, settings, long, max(batch.lengths), batch_videos)
    try:
        engine.generate(batch, long)  # warm-up: compilation, caches, first-touch of the weights
        one_s, one_tokens = _timed(engine, batch, GenerationParams(max_new_tokens=1, stop_token_ids=stop), repeat)
        long_s, long_tokens = _timed(engine, batch, long, repeat)
    finally:
        engine.close()
    llm_files = {path: entry.size for path, entry in bundle.manifest.files.items() if path.startswith("llm/")}
    quantization = bundle.manifest.llm.quantization
    return {
        "engine": engine.name,
        "quantization": quantization.scheme if quantization else "none",
        "llm_bytes": sum(llm_files.values()),
        "batch": batch_videos,
        "prompt_tokens": max(batch.lengths),
        "new_tokens": new_tokens,
        "generated_tokens": long_tokens,
        "first_token_s": round(one_s, 4),
        "decode_tokens_per_s": round((long_tokens - one_tokens) / max(long_s - one_s, 1e-9), 2),
    }
