"""`vlmcap info` and `vlmcap presets`: what this machine runs and which offline models come built in."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vlmcap.cli.options import json_option


@click.command()
@click.option(
    "--engine",
    "engine_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="A bundle: also say which engines and precisions `auto` takes for it on this machine, and the "
    "rates and checks behind the choice (measured once, then cached).",
)
@json_option
def info(engine_dir: Path | None, as_json: bool) -> None:
    """Versions, accelerators and the engines vlmcap would pick here.

    \b
    Examples:
      vlmcap info --json
      vlmcap info --engine bundles/exp1
    """
    from vlmcap.environment import environment_report

    report = environment_report()
    choice = _engine_choice(engine_dir) if engine_dir is not None else None
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "choice": choice.to_dict() if choice else None}, indent=2))
        return
    click.echo(f"vlmcap {report.vlmcap} (Python {report.python})")
    cpu = report.cpu
    bf16 = "native bf16" if cpu["native_bf16"] else "no native bf16"
    click.echo(f"CPU: {cpu['model']}, {cpu['cpus']} usable, {bf16} ({' '.join(cpu['flags']) or 'no vector flags'})")
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
    if choice is not None:
        click.echo(f"for {engine_dir}:")
        for line in choice.lines():
            click.echo(f"  {line}")


def _engine_choice(engine_dir: Path):
    """What `auto` takes for the bundle with the default batch settings (engines/runtime/engine_choice.py)."""
    from vlmcap.bundle import load_bundle
    from vlmcap.config.schema import BatchConfig
    from vlmcap.engines.runtime.engine_choice import engine_settings
    from vlmcap.model.generation import GenerationParams

    bundle = load_bundle(engine_dir)
    settings = BatchConfig(engine=str(engine_dir))
    return engine_settings(bundle, settings, GenerationParams.from_bundle(bundle, settings.generation))[1]


@click.group()
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
