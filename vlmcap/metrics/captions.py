"""Caption metrics that make sense for Korean.

- chrF++ (sacrebleu, character 6-grams + word 2-grams): robust to Korean's agglutinative endings.
- CIDEr-D on *character* tokens (Hangul syllables, whitespace dropped): Korean words carry
  particles (원이/원을), so word n-grams punish correct content; a morphological analyser would
  be better but needs a model download. Every report states the tokenization.
- exact match after whitespace normalisation.
- attribute accuracy where the caller knows a data set's attributes (the synthetic world's colour, shape
  and motion, vlmcap/presets/synthetic.py): parsed from both texts by the parser it passes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from sacrebleu.metrics import CHRF

CIDER_TOKENIZATION = "characters (Hangul syllables), whitespace removed"
_SIGMA = 6.0  # CIDEr-D Gaussian length penalty

# A data set's attributes named in a text ({"colour": "red", ...}, None where it names none).
AttributeParser = Callable[[str], dict[str, str | None]]


def char_tokens(text: str) -> list[str]:
    return [c for c in text if not c.isspace()]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """CIDEr-D (Vedantam et al. 2015, as coco-caption's CiderD): tf-idf n-gram cosine with clipping
    and a Gaussian length penalty, x10, averaged over n = 1..4 and over the corpus."""
    if not candidates:
        return 0.0
    refs_tokens = [[char_tokens(r) for r in refs] for refs in references]
    document_frequency: Counter = Counter()
    for refs in refs_tokens:
        document_frequency.update({g for r in refs for n in range(1, max_n + 1) for g in _ngrams(r, n)})
    log_docs = math.log(float(len(candidates)))

    def vector(tokens: list[str]) -> tuple[list[dict], list[float], int]:
        vecs, norms = [], []
        for n in range(1, max_n + 1):
            vec = {
                g: tf * (log_docs - math.log(max(1.0, document_frequency[g]))) for g, tf in _ngrams(tokens, n).items()
            }
            vecs.append(vec)
            norms.append(math.sqrt(sum(v * v for v in vec.values())))
        return vecs, norms, max(len(tokens) - 1, 0)  # coco-caption counts length in bigrams

    total = 0.0
    for candidate, refs in zip(candidates, refs_tokens, strict=True):
        c_vec, c_norm, c_len = vector(char_tokens(candidate))
        score = 0.0
        for ref in refs:
            r_vec, r_norm, r_len = vector(ref)
            per_n = []
            for n in range(max_n):
                overlap = sum(min(v, r_vec[n].get(g, 0.0)) * r_vec[n].get(g, 0.0) for g, v in c_vec[n].items())
                if c_norm[n] and r_norm[n]:
                    overlap /= c_norm[n] * r_norm[n]
                per_n.append(overlap * math.exp(-((c_len - r_len) ** 2) / (2 * _SIGMA**2)))
            score += sum(per_n) / max_n
        total += 10.0 * score / len(refs)
    return total / len(candidates)


def attribute_hits(candidate: str, reference: str, parse: AttributeParser) -> dict[str, bool] | None:
    """Whether the caption names each of the reference's attributes; None if the reference does not
    name them all (a data set other than the one `parse` knows)."""
    wanted = parse(reference)
    if None in wanted.values():
        return None
    got = parse(candidate)
    return {key: got[key] == wanted[key] for key in wanted}


def attribute_accuracy(
    candidates: Sequence[str], references: Sequence[str], parse: AttributeParser
) -> dict[str, float] | None:
    """Share of captions naming the reference's each attribute, and all of them; None if refs don't parse."""
    per_caption = [attribute_hits(c, r, parse) for c, r in zip(candidates, references, strict=True)]
    if not per_caption or any(hits is None for hits in per_caption):
        return None
    totals = {key: sum(hits[key] for hits in per_caption) for key in per_caption[0]}
    totals["all"] = sum(all(hits.values()) for hits in per_caption)
    return {k: v / len(candidates) for k, v in totals.items()}


def caption_scores(candidate: str, reference: str, attributes: AttributeParser | None = None) -> dict:
    """One caption's own scores, to look at beside it (`vlmcap eval --report`): its sentence chrF++
    and, where `attributes` parses the reference, which attributes it got right."""
    scores: dict = {"chrf++": round(CHRF(word_order=2).sentence_score(candidate, [reference]).score, 2)}
    hits = attribute_hits(candidate, reference, attributes) if attributes else None
    if hits is not None:
        scores["attributes"] = hits
    return scores


def caption_metrics(
    candidates: Sequence[str], references: Sequence[str], attributes: AttributeParser | None = None
) -> dict:
    """All metrics for one evaluation set (one reference per video); attribute accuracy where
    `attributes` parses every reference."""
    if not candidates:  # every video failed to decode: nothing to score
        return {"n": 0}
    chrf = CHRF(word_order=2).corpus_score(list(candidates), [list(references)]).score
    metrics = {
        "n": len(candidates),
        "chrf++": round(chrf, 2),
        "cider_d": round(cider_d(candidates, [[r] for r in references]), 4),
        "cider_d_tokens": CIDER_TOKENIZATION,
        "exact_match": sum(
            " ".join(c.split()) == " ".join(r.split()) for c, r in zip(candidates, references, strict=True)
        )
        / max(len(candidates), 1),
    }
    accuracy = attribute_accuracy(candidates, references, attributes) if attributes else None
    if accuracy is not None:
        metrics["attribute_accuracy"] = accuracy
    return metrics
