"""Our small version of Honeybee's projector comparison: every projector kind, same data and budget.

    python -m vlmcap.training.compare OUT_DIR [--steps 600] [--videos 1000]

Writes the synthetic data set, trains each kind (stage lora, tiny presets, feature cache) and
prints a Markdown table: tokens per video, trainable parameters, time spent in optimizer steps
(model loading, cache filling and evaluation excluded), and attribute
accuracy (colour + shape + motion all right) on the random and the held-out-pair validation sets.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from vlmcap.config.loading import load_config
from vlmcap.model.projectors import PROJECTOR_KINDS
from vlmcap.presets import resolve_model_source
from vlmcap.training.synth import SynthSpec, write_synthetic_dataset
from vlmcap.training.trainer import run_training


def compare(out: Path, steps: int, videos: int, kinds: list[str]) -> list[dict]:
    for preset in ("tiny-clip", "tiny-qwen3"):  # materialize before any run is timed
        resolve_model_source(f"preset:{preset}")
    data = out / "data"
    manifests = {p.stem: p for p in data.glob("*.jsonl")}
    if len(manifests) < 3:
        manifests = write_synthetic_dataset(data, SynthSpec(num_videos=videos, seed=0))
    rows = []
    for kind in kinds:
        run_dir = out / "runs" / kind
        if not (run_dir / "summary.json").exists():
            config = load_config(
                preset="tiny",
                overrides=[
                    f"model.projector.kind={kind}",
                    "train.stage=lora",
                    "train.feature_cache=true",
                    f"train.data={manifests['train']}",
                    f"train.val=[{manifests['val']}, {manifests['val_heldout_pairs']}]",
                    "train.batch_size=16",
                    f"train.max_steps={steps}",
                    f"train.save_every={steps}",
                    f"train.eval_every={steps}",
                    "train.lr_projector=2e-3",
                    "train.lr_lora=2e-3",
                ],
            )
            run_training(config, run_dir)
        rows.append({"kind": kind, **json.loads((run_dir / "summary.json").read_text())})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| projector | tokens/video | trainable params | train steps (s) | val: all right (colour / shape / motion) "
        "| held-out pairs: all right (colour / shape / motion) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = []
        for split in ("val", "val_heldout_pairs"):
            a = r["eval"][split]["attribute_accuracy"]
            cells.append(f"{a['all']:.0%} ({a['colour']:.0%} / {a['shape']:.0%} / {a['motion']:.0%})")
        lines.append(
            f"| `{r['kind']}` | {r['tokens_per_video']} | {r['trainable_parameters']:,} | "
            f"{r['train_step_seconds']:.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--kinds", default=",".join(PROJECTOR_KINDS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = compare(args.out, args.steps, args.videos, args.kinds.split(","))
    print(markdown(rows))


if __name__ == "__main__":
    main()
