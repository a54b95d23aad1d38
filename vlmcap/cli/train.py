"""`vlmcap synth` and `vlmcap train`: a data set to learn from, and the training run."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import click

from vlmcap.cli.config_source import ConfigSource, config_options
from vlmcap.cli.options import flag
from vlmcap.config.schema import VlmcapConfig


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--num-videos", default=1000, show_default=True, help="Videos in all splits together.")
@click.option("--seed", default=0, show_default=True, help="The data set is deterministic for a seed.")
@click.option("--frames", "num_frames", default=16, show_default=True, help="Frames per video.")
@click.option("--size", default=112, show_default=True, help="Width and height in pixels.")
@click.option(
    "--multi-scene",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Also write this many videos of 3-5 scenes (5 s each) and multiscene.jsonl, one line per scene.",
)
def synth(out: Path, num_videos: int, seed: int, num_frames: int, size: int, multi_scene: int) -> None:
    """Write a synthetic Korean video-caption data set to OUT (videos/, train/val manifests).

    Coloured shapes move across the screen; captions name colour, shape, lane and motion direction.
    val.jsonl holds random held-out videos; val_heldout_pairs.jsonl holds colour-shape pairs that
    never occur in train.jsonl. With --multi-scene N, multiscene.jsonl captions each scene of N
    videos that cut between scenes (start_s/end_s per line), for `vlmcap eval` on segments.

    \b
    Examples:
      vlmcap synth ./synth --num-videos 1000 --seed 0
      vlmcap synth ./synth --multi-scene 20 && vlmcap eval --data synth/multiscene.jsonl
    """
    from vlmcap.storage.output_guard import claim_folder, write_marker
    from vlmcap.training.synth import SynthSpec, write_synthetic_dataset

    folder = claim_folder("OUT", out, "synth")  # it writes videos/00000.mp4, train.jsonl, ...: never over someone's
    spec = SynthSpec(num_videos=num_videos, seed=seed, frames=num_frames, size=size, multi_scene=multi_scene)
    manifests = write_synthetic_dataset(out, spec)
    write_marker(folder, "synth")
    for split, path in manifests.items():
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        videos = len({line["video"] for line in lines})
        scenes = f" ({len(lines)} scenes)" if split == "multiscene" else ""
        click.echo(f"{split:<18} {videos:>6} videos  {path}{scenes}")


@click.command()
@config_options()
@flag("--data", "train.data")
@flag("--val", "train.val", multiple=True)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default: VLMCAP_HOME/runs/NAME)."
)
@click.option("--name", help="Run name under VLMCAP_HOME/runs (default: a timestamp).")
@click.option("--resume", is_flag=True, help="Continue the run in --out (or the latest run) from its last checkpoint.")
@click.option("--stop-after-steps", type=int, help="Save a checkpoint and stop after this many steps (resume later).")
@click.option(
    "--plan",
    is_flag=True,
    help="Print the memory a training step needs, by part, without and with gradient checkpointing and what "
    "auto picks; train nothing.",
)
@click.option(
    "--plan-device",
    type=click.Choice(["auto", "cuda", "cpu"]),
    default="auto",
    show_default=True,
    help="The device --plan plans for (auto: this machine's GPU, else its CPU); plan a GPU run on a laptop.",
)
def train(
    config: ConfigSource,
    out: Path | None,
    name: str | None,
    resume: bool,
    stop_after_steps: int | None,
    plan: bool,
    plan_device: str,
) -> None:
    """Train the projector (train.stage=projector) or projector + LoRA (train.stage=lora).

    \b
    Examples:
      vlmcap train --preset tiny --data synth/train.jsonl --val synth/val.jsonl train.stage=lora
      vlmcap train --config my.yaml --out runs/exp1 --resume
      vlmcap train --preset reference --plan --plan-device cuda train.memory_budget_gb=40
      torchrun --nproc_per_node 2 $(which vlmcap) train --config my.yaml   # DDP
    """
    if plan:
        print_memory_plan(config.load(), plan_device)
        return
    from vlmcap.storage.home import runs_dir
    from vlmcap.storage.run_dir import CONFIG_FILE, latest_run

    logging.getLogger("vlmcap.training").setLevel(logging.INFO)
    run_config: Path | None = None  # resuming without --config/--preset: the run's own config
    if resume and config.path is None and config.preset is None:
        if out is None:
            out = latest_run()
            if out is None:
                raise click.UsageError("--resume: no run found under VLMCAP_HOME/runs; pass --out")
        if (out / CONFIG_FILE).exists():
            run_config = out / CONFIG_FILE
    loaded = config.load(run_config)
    run_dir = out or runs_dir() / (name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    from vlmcap.storage.output_guard import check_apart
    from vlmcap.training.trainer import run_training

    tc = loaded.train
    reads = [("--config", config.path), ("--data", tc.data), ("train.init_from", tc.init_from)]
    check_apart("--out", run_dir, reads + [("--val", path) for path in tc.val], folder=True)

    result = run_training(loaded, run_dir, resume=resume, stop_after_steps=stop_after_steps)
    click.echo(f"run: {result.run_dir}  step {result.step}/{result.total_steps}  {result.seconds:.0f} s")
    if result.final_dir:
        click.echo(f"final weights: {result.final_dir}")
    for split, metrics in result.eval.items():
        click.echo(f"eval {split}: {json.dumps(metrics, ensure_ascii=False)}")


def print_memory_plan(config: VlmcapConfig, device: str) -> None:
    """The memory plan as a table: parts in GB for no, all and the config's gradient checkpointing."""
    import torch

    from vlmcap.labelled_manifest import load_manifest
    from vlmcap.training.memory_plan import BUDGET_SHARE, MemoryPlanner, memory_budget_bytes

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tc = config.train
    captions = [s.caption for s in load_manifest(tc.data)] if tc.data else []
    planner = MemoryPlanner(config, device, captions)
    budget = memory_budget_bytes(tc.memory_budget_gb, torch.device(device))
    plans = {"no checkpointing": planner.plan(0), f"all {planner.num_layers} layers": planner.plan(planner.num_layers)}
    chosen = None
    if budget is not None or tc.gradient_checkpointing != "auto":
        chosen = planner.choose(tc.gradient_checkpointing, budget)  # a budget nothing fits: its one-line error
        plans[f"{tc.gradient_checkpointing}: {chosen.checkpointing}"] = chosen
    first = chosen or plans["no checkpointing"]
    click.echo(
        f"training step on {device} in {first.dtype}: batch {first.batch_size} x {first.sequence_tokens} tokens "
        f"(captions of {first.caption_tokens} tokens), GB = 2**30 bytes"
    )
    width = max(len(name) for name in [*first.parts, *plans]) + 2
    click.echo("".ljust(22) + "".join(name.rjust(width) for name in plans))
    for part in first.parts:
        click.echo(part.ljust(22) + "".join(f"{p.parts[part] / 2**30:.2f}".rjust(width) for p in plans.values()))
    click.echo("total".ljust(22) + "".join(f"{p.total_bytes / 2**30:.2f}".rjust(width) for p in plans.values()))
    click.echo(
        f"activations include the vision encoder's pass ({first.vision_pass_bytes / 2**30:.2f} GB at its peak) "
        f"and the caption logits ({first.logits_bytes / 2**30:.2f} GB)"
    )
    if budget is None:
        click.echo("budget: none known for cuda on this machine; set train.memory_budget_gb to see what auto picks")
    else:
        click.echo(f"budget: {budget / 2**30:.1f} GB, of which a plan may use {BUDGET_SHARE:.0%}")
