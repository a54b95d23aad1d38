"""What `vlmcap batch` checks about the prompt before any work (docs/BATCH.md, "Bad input").

- It is text: a prompt with bytes that are not UTF-8 (a surrogate escape from the command line) fails.
- It holds no chat control token (`<|im_start|>`, `<|im_end|>`, ... any special or added token of
  the bundle's tokenizer) unless `--allow-control-tokens`: such a token in the user turn would end
  the turn early or open a new one, so the model would see a different conversation than it was
  trained on.
- It has at most one `<video>` placeholder.
- The video rows, the prompt and `max_new_tokens` fit the LLM's context.
"""

from __future__ import annotations

import json

from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.errors import ConfigError
from vlmcap.model.generation import GenerationParams


def _control_tokens(tokenizer) -> set[str]:
    added = {token.content for token in tokenizer.added_tokens_decoder.values()}
    return {t for t in set(tokenizer.all_special_tokens) | added if t}


def context_length(bundle: Bundle, settings: BatchConfig) -> int:
    """The positions the LLM takes: its config's `max_position_embeddings`, or less when vLLM is capped."""
    config = json.loads((bundle.llm_dir / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    limit = int(config.get("max_position_embeddings") or 0) or None
    capped = settings.vllm.max_model_len
    return min(x for x in (limit, capped) if x) if (limit or capped) else 1 << 62


def check_prompt(bundle: Bundle, settings: BatchConfig, params: GenerationParams) -> None:
    from transformers import AutoTokenizer

    from vlmcap.model.prompt import PromptBuilder

    prompt = bundle.manifest.prompt
    text = prompt.instruction(settings.prompt)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("--prompt: not valid UTF-8 text") from None
    tokenizer = AutoTokenizer.from_pretrained(bundle.llm_dir, trust_remote_code=False)
    if settings.prompt is not None and not settings.allow_control_tokens:
        found = sorted(t for t in _control_tokens(tokenizer) if t in settings.prompt)
        if found:
            raise ConfigError(
                f"--prompt contains the chat control token {found[0]!r}; it would change the conversation "
                "the model sees (pass --allow-control-tokens if that is what you mean)"
            )
    tokens = PromptBuilder(tokenizer, prompt.default_prompt, prompt.system_prompt).encode(settings.prompt)
    needed = bundle.manifest.tokens_per_video + tokens.num_text_tokens + params.max_new_tokens
    context = context_length(bundle, settings)
    if needed > context:
        raise ConfigError(
            f"--prompt: {tokens.num_text_tokens} prompt tokens + {bundle.manifest.tokens_per_video} video rows + "
            f"{params.max_new_tokens} new tokens = {needed} positions, more than the LLM's context of {context}; "
            "shorten the prompt or lower --max-new-tokens"
        )
