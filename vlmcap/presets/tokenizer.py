"""A byte-level BPE tokenizer trained offline on generated Korean text, dressed as Qwen3's.

It has Qwen's pre-tokenizer regex, NFC normalisation, byte-level alphabet, special/added tokens
(in Qwen's order, at the end of the vocabulary) and Qwen3's chat template, so every code path
that handles a real Qwen3 tokenizer (chat template, <|im_end|>, thinking switch) runs on it.
"""

from __future__ import annotations

from importlib import resources

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vlmcap.presets.korean_text import korean_sentences

# Qwen2/Qwen3 pre-tokenizer split pattern (tokenizer.json of the Qwen checkpoints).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's added tokens in id order; `True` marks the ones flagged special.
QWEN3_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]


def qwen3_chat_template() -> str:
    return resources.files("vlmcap.presets").joinpath("qwen3_chat_template.jinja").read_text(encoding="utf-8")


def train_korean_tokenizer(
    vocab_size: int = 2048, num_sentences: int = 20000, seed: int = 0
) -> PreTrainedTokenizerFast:
    """Train the BPE on `num_sentences` generated sentences; deterministic for a seed.

    `vocab_size` is an upper bound: the generated text is narrow, so BPE runs out of merges
    earlier (about a thousand tokens), which keeps the tiny LLM's embedding table small.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN3_ADDED_TOKENS),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(korean_sentences(num_sentences, seed=seed), trainer=trainer)
    for content, special in QWEN3_ADDED_TOKENS:  # one at a time keeps Qwen's id order
        token = AddedToken(content, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=qwen3_chat_template(),
        model_max_length=40960,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
