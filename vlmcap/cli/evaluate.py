"""`vlmcap eval`: score a bundle on a labelled manifest through the batch path."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vlmcap.cli.config_source import ConfigSource, config_options
from vlmcap.cli.options import (
    decode_options,
    engine_options,
    json_option,
    segment_plan_options,
)


@click.command("eval")
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Labelled JSONL manifest.")
@config_options(overrides=False)
@engine_options
@decode_options
@segment_plan_options
@click.option("--records", type=click.Path(dir_okay=False, path_type=Path), help="Write per-video captions here.")
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a page of predictions beside references, with the frames the model saw, into this folder.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --report folder.")
@json_option
def eval_cmd(
    data: Path, config: ConfigSource, records: Path | None, report: Path | None, overwrite: bool, as_json: bool
) -> None:
    """Caption a labelled manifest with a bundle (the batch path) and report chrF++, CIDEr-D, exact match.

    CIDEr-D is computed on characters (Hangul syllables, whitespace removed), not words. Engine
    settings come from the flags and the `batch:` section of --config FILE.

    A manifest whose lines carry start_s/end_s is scored per segment: videos are captioned per
    segment (--segments, scenes unless given), each reference segment is compared with the
    predicted segment that overlaps it most, and the boundary recall counts the reference cuts
    with a predicted boundary within 0.5 s.

    \b
    Examples:
      vlmcap eval --data synth/val.jsonl --json
      vlmcap eval --data synth/multiscene.jsonl --segments scenes
      vlmcap eval --data synth/val.jsonl --report eval-page/    # then open eval-page/index.html
    """
    from vlmcap.bundle import load_bundle
    from vlmcap.engines.batch.ledger import starts_a_ledger
    from vlmcap.engines.batch.run_batch import bundle_path
    from vlmcap.engines.eval.eval_report import EVAL_COMMAND, evaluate_with_page
    from vlmcap.engines.eval.evaluate import evaluate_bundle
    from vlmcap.engines.outputs.static_site import check_site_folder
    from vlmcap.storage.files import write_jsonl
    from vlmcap.storage.output_guard import check_file_output

    settings = config.load().batch
    reads = [("--data", data), ("--config", config.path), ("--engine", bundle_path(settings))]
    if records is not None:  # before the work, not after it: never a video, never over what is no records file
        check_file_output("--records", records, reads, recognise=starts_a_ledger, kind="a JSONL of caption records")
    if report is not None:
        check_site_folder(report, overwrite, EVAL_COMMAND, [*reads, ("--records", records)], "--report")
    bundle = load_bundle(bundle_path(settings))
    if report is None:
        metrics = evaluate_bundle(bundle, data, settings, records)["metrics"]
    else:
        evaluation = evaluate_with_page(bundle, data, settings, report)
        metrics = evaluation["metrics"]
        if records is not None:
            write_jsonl(records, evaluation["records"])
    if as_json:
        click.echo(json.dumps(metrics, indent=2, ensure_ascii=False))
        return
    scored = "reference segments scored" if "segments_reference" in metrics else "captioned"
    click.echo(f"{data}: {metrics['n']} {scored}, {metrics['failed']} failed, bundle {metrics['bundle']}")
    click.echo(f"chrF++ {metrics.get('chrf++')}  CIDEr-D {metrics.get('cider_d')} ({metrics.get('cider_d_tokens')})")
    click.echo(f"exact match {metrics.get('exact_match', 0):.3f}")
    if "attribute_accuracy" in metrics:
        click.echo(f"attribute accuracy {json.dumps(metrics['attribute_accuracy'])}")
    if "segments_reference" in metrics:
        recall = metrics["boundary_recall"]
        click.echo(
            f"segments ({metrics['segments']}): {metrics['segments_reference']} reference, "
            f"{metrics['segments_predicted']} predicted; boundary recall "
            f"{'n/a (no reference cuts)' if recall is None else f'{recall:.3f}'} "
            f"(within {metrics['boundary_tolerance_s']:g} s)"
        )
    if report is not None:
        click.echo(f"page: {report / 'index.html'}")
