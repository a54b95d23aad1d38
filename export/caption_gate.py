"""The caption gate: a lossy bundle must caption held-out videos like the float32 model does.

Row-level checks (export/verify.py) show that a quantized graph computes nearly the same numbers;
captions are what users get, and one flipped token early in a caption changes everything after it.
So every lossy export (vision fp16/int8, a 16-bit or quantized LLM) captions the same held-out
videos twice, greedily:
- reference: the float32 vision graph and the float32 merged LLM, before anything is rounded;
- bundle: the shipped vision.onnx and the shipped LLM checkpoint as transformers loads it, fed
  text rows from the table the engines read (vlmcap/model/text_rows.py).
Recorded (bundle.json `caption_gate`, shown by `vlmcap inspect`): chrF++ of the bundle's captions
against the reference's, the share of identical captions, and token agreement: the share of
reference caption tokens the shipped LLM predicts as its greedy next token when fed the reference
caption so far (teacher-forced, so one early flip does not hide the rest). Below any threshold
(`export.gate`, docs/EXPORT.md) the export fails and nothing is published.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmcap.config.schema import CaptionGateConfig
from vlmcap.errors import ExportError
from vlmcap.metrics.agreement import Rows, greedy_captions, token_agreement
from vlmcap.metrics.captions import caption_metrics

__all__ = ["GateInputs", "Rows", "greedy_captions", "judge", "token_agreement"]


@dataclass(frozen=True)
class GateInputs:
    reference_rows: torch.Tensor  # (N, V, D) float32 vision rows from PyTorch
    shipped_rows: torch.Tensor  # (N, V, D) vision rows from the shipped vision.onnx
    sources: list[str]  # where each video came from
    lossy: list[str]  # what rounds numbers in this bundle, e.g. ["vision int8", "llm w4a16"]


def judge(
    reference: list[str], candidate: list[str], agreement: float, inputs: GateInputs, thresholds: CaptionGateConfig
) -> dict:
    """The gate's record; ExportError with every number when a threshold is missed."""
    metrics = caption_metrics(candidate, reference)
    # chrF++ of empty captions is 0 even when both sides agree (a model that emits only special tokens).
    chrf = 100.0 if candidate == reference else metrics["chrf++"]
    record = {
        "videos": len(reference),
        "sources": inputs.sources,
        "lossy": inputs.lossy,
        "chrf": chrf,
        "exact_match": round(metrics["exact_match"], 4),
        "token_agreement": round(agreement, 4),
        "thresholds": thresholds.model_dump(exclude={"videos"}),
    }
    misses = [
        f"{label} {record[key]} < {limit}"
        for label, key, limit in (
            ("chrF++", "chrf", thresholds.min_chrf),
            ("exact match", "exact_match", thresholds.min_exact_match),
            ("token agreement", "token_agreement", thresholds.min_token_agreement),
        )
        if record[key] < limit
    ]
    record["passed"] = not misses
    if misses:
        raise ExportError(
            f"caption gate failed for {', '.join(inputs.lossy)} against float32 on {len(reference)} held-out videos: "
            f"{'; '.join(misses)} (lower export.gate.* to accept, or choose a less lossy format); nothing was published"
        )
    return record
