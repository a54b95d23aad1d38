"""`vlmcap export` and `vlmcap inspect`: a trained run to a verified bundle, and what a bundle holds."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from vlmcap.cli.config_source import ConfigSource, config_options
from vlmcap.cli.options import flags, json_option


@click.command("export")
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Bundle directory (default: VLMCAP_HOME/engines/default).",
)
@config_options(file=False, overrides=False)
@flags(
    ("--precision", "export.precision"),
    ("--opset", "export.opset"),
    ("--merge-into", "export.merge_into"),
    ("--llm-dtype", "export.llm_dtype"),
    ("--llm-quant", "export.llm_quant"),
    ("--llm-quant-group-size", "export.llm_quant_group_size"),
    ("--calibration-videos", "export.calibration_videos"),
    ("--gate-videos", "export.gate.videos"),
    ("--gate-min-chrf", "export.gate.min_chrf"),
    ("--gate-min-exact-match", "export.gate.min_exact_match"),
    ("--gate-min-token-agreement", "export.gate.min_token_agreement"),
)
@click.option(
    "--sample-video", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help="Verify on this video."
)
@click.option("--device", help="Where the LLM is merged (default: cuda when available, else cpu).")
@json_option
def export_cmd(
    run: Path | None,
    out: Path | None,
    config: ConfigSource,
    sample_video: tuple[Path, ...],
    device: str | None,
    as_json: bool,
) -> None:
    """Export a trained RUN (default: the latest run) as a verified engine bundle.

    Flags override the run's own `export:` section.

    \b
    Examples:
      vlmcap export                                   # latest run -> VLMCAP_HOME/engines/default
      vlmcap export runs/exp1 --out bundles/exp1-int8 --precision int8
      vlmcap export --llm-quant w4a16 --precision int8   # edge box: 4-bit LLM, int8 vision
    """
    from vlmcap.storage.home import default_engine_dir
    from vlmcap.storage.run_dir import latest_run

    logging.getLogger("vlmcap.export").setLevel(logging.INFO)
    if run is None:
        run = latest_run()
        if run is None:
            raise click.UsageError("no run found under VLMCAP_HOME/runs; train one first or pass RUN")
    from vlmcap.export.describe import describe_bundle
    from vlmcap.export.exporter import ExportRequest, export_bundle, run_export_config

    options = run_export_config(run, config.section_flags("export"))
    out = out or default_engine_dir()
    manifest = export_bundle(ExportRequest(run, out, options, list(sample_video), device))
    if as_json:
        click.echo(json.dumps(manifest.to_json_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(describe_bundle(manifest, verified=True))
    click.echo(f"wrote {out}")


@click.command()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@json_option
def inspect(bundle: Path | None, as_json: bool) -> None:
    """Show an engine BUNDLE (default: VLMCAP_HOME/engines/default) and verify every file's sha256.

    Exits 2 with the name of the first bad file if the bundle is incomplete, changed or unknown.
    With --json the manifest is printed with "path" and "verified": true added.
    """
    from vlmcap.bundle import load_bundle
    from vlmcap.export.describe import describe_bundle
    from vlmcap.storage.home import default_engine_dir

    loaded = load_bundle(bundle or default_engine_dir())
    if as_json:
        report = {**loaded.manifest.to_json_dict(), "path": str(loaded.root), "verified": True}
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(f"path       {loaded.root}")
    click.echo(describe_bundle(loaded.manifest, verified=True))
