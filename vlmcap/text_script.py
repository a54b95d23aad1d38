"""Which writing system a text is in (Unicode scripts), for the caption guards' language check.

The Unicode script property (`\\p{Script=Hangul}`) through the `regex` package: it knows every
script Unicode defines, so "Hangul", "Latin", "Han", "Cyrillic", ... need no table of ranges here.
"""

from __future__ import annotations

import functools

import regex

# The scripts `auto` chooses among: the prompt's main script is taken as the captions' one.
COMMON_SCRIPTS = (
    "Hangul",
    "Latin",
    "Han",
    "Hiragana",
    "Katakana",
    "Cyrillic",
    "Greek",
    "Arabic",
    "Hebrew",
    "Thai",
    "Devanagari",
)
_LETTER = regex.compile(r"\p{L}")


@functools.lru_cache(maxsize=64)
def script_pattern(names: str) -> regex.Pattern:
    """`Hangul` or `Han+Hiragana+Katakana` -> a pattern matching one letter of any of them;
    ValueError naming the unknown script."""
    parts = [n.strip() for n in names.split("+")]
    for name in parts:
        try:
            regex.compile(rf"\p{{Script={name}}}")
        except regex.error:
            raise ValueError(f"unknown Unicode script {name!r} (e.g. Hangul, Latin, Han, Cyrillic)") from None
    return regex.compile("|".join(rf"\p{{Script={n}}}" for n in parts))


def main_script(text: str) -> str | None:
    """The common script most of `text`'s letters are in; None for a text with none of them."""
    counts = {name: len(script_pattern(name).findall(text)) for name in COMMON_SCRIPTS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else None


def script_fraction(text: str, names: str) -> float | None:
    """Fraction of `text`'s letters in the scripts `names`; None when it has no letters."""
    letters = len(_LETTER.findall(text))
    if not letters:
        return None
    return len(script_pattern(names).findall(text)) / letters
