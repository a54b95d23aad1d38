"""Caption guards: what bulk captioning goes wrong with, caught on every caption (docs/BATCH.md,
"Caption quality").

- `repetition`: a loop. Of the caption's token n-grams, more than `repetition_max_fraction` repeat
  an earlier one (a sentence said three times, one token over and over). Counted on token ids, so
  it needs no word splitting and works for every language.
- `truncated`: cut at max_new_tokens; no end of turn was generated.
- `wrong_script`: fewer than `script_min_fraction` of the caption's letters are in the expected
  script (Hangul for a Korean prompt).
- `empty`: nothing but whitespace.

A flagged caption is generated once more with the retry decoding (`QualityConfig.retry_generation`);
the one with fewer flags is kept, the retry on a tie.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vlmcap.config.schema import QUALITY_CHECKS, QualityConfig
from vlmcap.text_script import main_script, script_fraction


@dataclass(frozen=True)
class Quality:
    """What the guards found in a written caption, and whether it is a retry's."""

    flags: tuple[str, ...] = ()  # of the caption written
    retried: bool = False
    retried_for: tuple[str, ...] = ()  # the first attempt's flags, when it was retried
    used: str = "first"  # "first" or "retry": which generation the caption is

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"flags": list(self.flags), "retried": self.retried}
        if self.retried:
            out |= {"retried_for": list(self.retried_for), "used": self.used}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Quality:
        """What `to_dict` wrote."""
        flags, retried_for = tuple(d.get("flags", ())), tuple(d.get("retried_for", ()))
        return cls(flags, d.get("retried", False), retried_for, d.get("used", "first"))

    @classmethod
    def combine(cls, parts: Iterable[Quality]) -> Quality:
        """A video's quality from its segments': every flag any has, retried if any was."""
        parts = list(parts)
        return cls(
            _ordered(f for p in parts for f in p.flags),
            any(p.retried for p in parts),
            _ordered(f for p in parts for f in p.retried_for),
            "retry" if any(p.used == "retry" for p in parts) else "first",
        )


def _ordered(flags: Iterable[str]) -> tuple[str, ...]:
    found = set(flags)
    return tuple(f for f in QUALITY_CHECKS if f in found)


def repeated_fraction(token_ids: list[int], n: int) -> float:
    """Fraction of the n-grams of `token_ids` that repeat an earlier one (0 for a loop-free text)."""
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(Counter(grams)) / len(grams)


class CaptionGuard:
    """The checks of a run; `expected_script` is resolved once per prompt."""

    def __init__(self, settings: QualityConfig, stop_token_ids: list[int], placeholder: str = "<video>") -> None:
        self.settings = settings
        self.placeholder = placeholder  # where the video goes in a prompt: its letters say nothing of the language
        self.checks = frozenset(settings.checks)
        self.stop_token_ids = frozenset(stop_token_ids)
        self._scripts: dict[str, str | None] = {}

    def expected_script(self, prompt: str) -> str | None:
        """The script names captions should be in, or None: no check (`none`, or `auto` with a
        prompt that has no letters of a common script)."""
        script = self.settings.script
        if script == "none":
            return None
        if script != "auto":
            return script
        if prompt not in self._scripts:
            self._scripts[prompt] = main_script(prompt.replace(self.placeholder, " "))
        return self._scripts[prompt]

    def flags(self, text: str, token_ids: list[int], finish_reason: str, prompt: str) -> tuple[str, ...]:
        """The checks a caption fails, in QUALITY_CHECKS order."""
        s = self.settings
        content = [t for t in token_ids if t not in self.stop_token_ids]
        script = self.expected_script(prompt) if "wrong_script" in self.checks else None
        fraction = script_fraction(text, script) if script else None
        hits = {
            "repetition": len(content) >= s.repetition_min_tokens
            and repeated_fraction(content, s.repetition_ngram) > s.repetition_max_fraction,
            "truncated": finish_reason == "length",
            "wrong_script": fraction is not None and fraction < s.script_min_fraction,
            "empty": not text.strip(),
        }
        return tuple(name for name in QUALITY_CHECKS if name in self.checks and hits[name])


def choose(first_flags: tuple[str, ...], retry_flags: tuple[str, ...]) -> Quality:
    """Which of a retried caption's two generations is written: the one with fewer flags, the retry on a tie."""
    if len(retry_flags) <= len(first_flags):
        return Quality(retry_flags, True, first_flags, "retry")
    return Quality(first_flags, True, first_flags, "first")
