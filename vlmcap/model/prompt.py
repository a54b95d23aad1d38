"""The prompt layout: chat template around one `<video>` placeholder, and the caption target.

The chat is rendered to text with the tokenizer's own chat template (Qwen3 in non-thinking
mode), split at the placeholder, and each side is tokenized on its own; the vision rows go in
between. Training appends the caption and the end-of-turn token, which are the only labelled
positions, after exactly the prefix that inference generates from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from vlmcap.config.schema import DEFAULT_PROMPT, VIDEO_PLACEHOLDER
from vlmcap.errors import ConfigError

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of one sample: `before` + [vision rows] + `after` + `target`."""

    before: list[int]
    after: list[int]
    target: list[int] = field(default_factory=list)

    @property
    def num_text_tokens(self) -> int:
        return len(self.before) + len(self.after) + len(self.target)


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that closes an assistant turn (Qwen: <|im_end|>), else the tokenizer's EOS."""
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            return vocab[token]
    if tokenizer.eos_token_id is None:
        raise ConfigError("the LLM tokenizer has neither an end-of-turn token nor an EOS token")
    return int(tokenizer.eos_token_id)


class PromptBuilder:
    """Turns (prompt, optional caption) into `PromptTokens` with the LLM tokenizer's chat template."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        default_prompt: str = DEFAULT_PROMPT,
        system_prompt: str | None = None,
    ) -> None:
        if not tokenizer.chat_template:
            raise ConfigError("the LLM tokenizer has no chat template; use an instruct/chat checkpoint")
        if system_prompt and VIDEO_PLACEHOLDER in system_prompt:
            raise ConfigError(f"prompt.system_prompt must not contain {VIDEO_PLACEHOLDER}; put it in the user prompt")
        self.tokenizer = tokenizer
        self.default_prompt = default_prompt
        self.system_prompt = system_prompt
        self.end_of_turn_id = end_of_turn_id(tokenizer)

    def render(self, prompt: str | None = None) -> tuple[str, str]:
        """Chat text before and after the placeholder, ending with the assistant header."""
        prompt = self.default_prompt if prompt is None else prompt
        count = prompt.count(VIDEO_PLACEHOLDER)
        if count > 1:
            raise ConfigError(f"prompt {prompt!r} has {count} {VIDEO_PLACEHOLDER} placeholders; use at most one")
        if count == 0:
            prompt = f"{VIDEO_PLACEHOLDER}\n{prompt}"
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        before, _, after = text.partition(VIDEO_PLACEHOLDER)
        return before, after

    def encode(self, prompt: str | None = None, caption: str | None = None) -> PromptTokens:
        before, after = self.render(prompt)
        target: list[int] = []
        if caption is not None:
            target = [*self._ids(caption.strip()), self.end_of_turn_id]
        return PromptTokens(before=self._ids(before), after=self._ids(after), target=target)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
