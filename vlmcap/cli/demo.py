"""`vlmcap demo`: the whole job on the embedded tiny default, offline, in a few minutes on 2 cores.

synthetic Korean video-caption set -> train the tiny preset -> export to the default engine ->
caption the held-out videos through the batch path -> a table of captions vs references -> one
multi-scene video captioned per scene (`vlmcap batch --segments scenes`).
Afterwards `vlmcap batch ./videos --out captions.jsonl` works with no other flag.

The one workflow that crosses all three stages, so it lives in the CLI layer; the stages are
imported when it runs, not when the CLI starts.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vlmcap.config.loading import load_config
from vlmcap.config.schema import BatchConfig, ExportConfig
from vlmcap.display_text import fit
from vlmcap.storage.home import default_engine_dir
from vlmcap.storage.output_guard import check_apart, claim_folder, write_marker
from vlmcap.storage.run_dir import FINAL_DIR, WEIGHTS_FILE

log = logging.getLogger(__name__)

# The recipe docs/TRAINING.md measures: ~99% attribute accuracy on the val split after 600 steps.
TRAIN_RECIPE = [
    "train.stage=lora",
    "train.feature_cache=true",
    "train.batch_size=16",
    "train.lr_projector=2e-3",
    "train.lr_lora=2e-3",
    "train.eval_every=1000",
    "train.save_every=1000",
]


def run_demo(
    workdir: Path,
    num_videos: int = 1000,
    steps: int = 600,
    llm_backend: str = "auto",
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    from vlmcap.bundle import load_bundle
    from vlmcap.engines import caption_videos
    from vlmcap.engines.eval.eval_report import EVAL_COMMAND, evaluate_with_page
    from vlmcap.engines.outputs.report import build_report
    from vlmcap.engines.outputs.static_site import check_site_folder
    from vlmcap.export.exporter import ExportRequest, export_bundle
    from vlmcap.metrics.segments import best_match
    from vlmcap.training.synth import SynthSpec, write_multiscene_set, write_synthetic_dataset
    from vlmcap.training.trainer import run_training
    from vlmcap.video.segments import Segment

    engine = default_engine_dir()
    # The demo replaces the default engine whole and writes into its work folder file by file: the
    # folder must be new, empty or a demo's, and apart from the engine (vlmcap/storage/output_guard.py).
    check_apart("--workdir", workdir, [("the default engine", engine)], folder=True)
    workdir = claim_folder("--workdir", workdir, "demo")
    check_site_folder(workdir / "eval", True, EVAL_COMMAND, flag="--workdir")
    timings: dict[str, float] = {}

    def step(name: str, message: str) -> float:
        write_marker(workdir, "demo")  # what the steps so far wrote: a later demo may write over it
        say(f"\n== {message}")
        timings[name] = time.perf_counter()
        return timings[name]

    step("synth", f"synthetic Korean video-caption set: {num_videos} videos of coloured shapes in motion")
    data = write_synthetic_dataset(workdir / "synth", SynthSpec(num_videos=num_videos, seed=0))
    for split, path in data.items():
        say(f"   {split:<18} {path}")

    step("train", f"training the tiny preset (C-Abstractor projector + LoRA), {steps} steps on this CPU")
    run_dir = workdir / "run"
    overrides = [f"train.data={data['train']}", f"train.max_steps={steps}", *TRAIN_RECIPE]
    config = load_config(preset="tiny", overrides=overrides)
    if (run_dir / FINAL_DIR / WEIGHTS_FILE).exists():
        say(f"   {run_dir} is already trained; reusing it")
    else:
        result = run_training(config, run_dir)
        say(f"   {result.step} steps in {result.seconds:.0f} s -> {result.final_dir}")

    step("export", f"exporting a verified bundle to the default engine: {engine}")
    manifest = export_bundle(ExportRequest(run_dir, engine, ExportConfig()))
    vision = manifest.vision.verification["final"]
    say(
        f"   bundle {manifest.id}: ONNX vs PyTorch max |diff| {vision.max_abs:.2g}; merged LLM greedy "
        f"agreement {manifest.llm.verification.top1_agreement:.3f}"
    )

    step("caption", "captioning the validation videos through the batch path (ONNX Runtime + LLM engine)")
    settings = BatchConfig(llm_backend=llm_backend, batch_size=16)
    # With the page to look at them: each prediction beside its reference and the frames it saw.
    evaluation = evaluate_with_page(load_bundle(engine), data["val"], settings, workdir / "eval")
    metrics = evaluation["metrics"]
    timings["end"] = time.perf_counter()
    say("")
    say(table_row("video", "generated caption", "reference"))
    for r in evaluation["records"][:8]:
        say(table_row(Path(r["video"]).name, r.get("caption", f"({r['status']})"), r["reference"]))
    accuracy = metrics.get("attribute_accuracy", {})
    say("")
    say(
        f"{metrics['n']} videos via {metrics['engines'].get('llm')}: colour+shape+motion all right "
        f"{accuracy.get('all', 0):.0%}, chrF++ {metrics['chrf++']}, CIDEr-D {metrics['cider_d']} "
        f"(on characters), exact match {metrics['exact_match']:.0%}"
    )

    step("scenes", "one video of several scenes, captioned per scene: vlmcap batch --segments scenes")
    # Its own folder, so synth/videos stays the 2 s clips that docs/PERFORMANCE.md benchmarks on.
    references = write_multiscene_set(workdir / "multiscene", SynthSpec(seed=0, multi_scene=1))
    scene_refs = [json.loads(line) for line in references.read_text(encoding="utf-8").splitlines()]
    out = workdir / "multiscene" / "captions.jsonl"
    scene_settings = BatchConfig(
        inputs=[str(references.parent / scene_refs[0]["video"])],
        out=str(out),
        segments="scenes",
        # One short video: starting vLLM (~50 s on 2 cores) would dwarf its few captions, while
        # transformers starts in seconds; an explicit --llm-backend is still honoured.
        llm_backend="transformers" if llm_backend == "auto" else llm_backend,
        overwrite=True,
        progress=False,
        thumbnails=str(workdir / "multiscene" / "thumbs"),
    )
    caption_videos(settings=scene_settings)  # the Python API's run, as `vlmcap batch` calls it
    report = workdir / "multiscene" / "report"
    build_report(out, report, overwrite=True)
    (line,) = [json.loads(text) for text in out.read_text(encoding="utf-8").splitlines()]
    timings["scenes_end"] = time.perf_counter()
    write_marker(workdir, "demo")
    scenes = line.get("segments") or []
    say(f"   {line['video']}: {len(scene_refs)} scenes of 5 s, {len(scenes)} found")
    say("   " + table_row("time", "generated caption", "reference (the scene it overlaps most)"))
    truth = [Segment(r["start_s"], r["end_s"]) for r in scene_refs]
    for segment in scenes:
        reference = scene_refs[best_match(Segment(segment["start_s"], segment["end_s"]), truth)]
        span = f"{_clock(segment['start_s'])}-{_clock(segment['end_s'])}"
        say("   " + table_row(span, segment["caption"], reference["caption"]))
    if line["status"] != "ok":
        say(f"   ({line['status']}: {line.get('error', {}).get('message')})")
    say(f"   -> {out}")
    say(f"\nlook at them in a browser: {workdir / 'eval' / 'index.html'} (predictions beside references),")
    say(f"   {report / 'index.html'} (the captions file, each scene with the frames the model saw)")

    names = ["synth", "train", "export", "caption", "end"]
    spans = {a: round(timings[b] - timings[a], 1) for a, b in itertools.pairwise(names)}
    spans["scenes"] = round(timings["scenes_end"] - timings["scenes"], 1)
    say(f"time: {spans}")
    say(f"\nnext: vlmcap batch ./videos --out captions.jsonl   (uses {engine})")
    return {"metrics": metrics, "seconds": spans, "bundle": manifest.id, "scenes": scenes}


def table_row(first: str, caption: str, reference: str) -> str:
    """One line of the demo's tables, aligned in terminal cells (Hangul takes two), never wrapped."""
    return f"{fit(first, 12)} {fit(caption, 44)} {fit(reference, 44)}".rstrip()


def _clock(seconds: float) -> str:
    """mm:ss, as a player shows a time."""
    whole = int(seconds + 0.5)
    return f"{whole // 60:02d}:{whole % 60:02d}"


@click.command()
@click.option("--workdir", default="vlmcap-demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--num-videos", default=1000, show_default=True, type=click.IntRange(100), help="Synthetic set size.")
@click.option("--steps", default=600, show_default=True, type=click.IntRange(1), help="Training steps.")
@click.option("--llm-backend", type=click.Choice(["auto", "vllm", "transformers"]), default="auto", show_default=True)
def demo(workdir: Path, num_videos: int, steps: int, llm_backend: str) -> None:
    """The whole job offline on the tiny preset: synth -> train -> export -> batch-caption -> scores.

    Ends with one multi-scene video captioned per scene (vlmcap batch --segments scenes), and two
    pages to open in a browser: the evaluation (vlmcap eval --report) and that video's captions
    report with the frames the model saw (vlmcap captions report). A few
    minutes on 2 CPU cores. Leaves a trained run and the default engine behind, so
    `vlmcap batch ./videos --out captions.jsonl` works afterwards with no other flag.
    """
    run_demo(workdir, num_videos, steps, llm_backend, say=click.echo)
