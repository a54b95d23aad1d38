"""The command group, its error handling, and where each command group is registered."""

from __future__ import annotations

import logging
import os
import sys

import click

from vlmcap import __version__
from vlmcap.cli.batch import batch, probe
from vlmcap.cli.bench import bench
from vlmcap.cli.config import config, summary
from vlmcap.cli.demo import demo
from vlmcap.cli.environment import info, presets
from vlmcap.cli.evaluate import eval_cmd
from vlmcap.cli.export import export_cmd, inspect
from vlmcap.cli.train import synth, train
from vlmcap.errors import VlmcapError

EXIT_USAGE = 2  # usage or configuration error (docs/BATCH.md, "Exit codes")


class VlmcapGroup(click.Group):
    """Turns a VlmcapError into one line on stderr and its exit code (2 unless it says), never a traceback."""

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


for command in (info, presets, config, summary, synth, train, export_cmd, inspect, demo, eval_cmd, batch, probe, bench):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="vlmcap")
