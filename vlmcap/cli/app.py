"""The command group, its error handling, and where each command group is registered."""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click

from vlmcap import __version__
from vlmcap.cli.batch import batch, probe
from vlmcap.cli.bench import bench
from vlmcap.cli.captions import captions
from vlmcap.cli.config import config, summary
from vlmcap.cli.demo import demo
from vlmcap.cli.environment import info, presets
from vlmcap.cli.evaluate import eval_cmd
from vlmcap.cli.export import export_cmd, inspect
from vlmcap.cli.train import synth, train
from vlmcap.errors import VlmcapError

# Exit codes (docs/BATCH.md, "Exit codes"): what a cron wrapper can act on without reading logs.
EXIT_USAGE = 2  # usage or configuration error, before any work
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in vlmcap or a library; the message says where
EXIT_IO = 74  # EX_IOERR: the system refused a read or write (disk full, read-only, permissions)
EXIT_SIGINT = 130

# Set while a command runs without -v. vLLM starts its engine in a spawned process, and a spawned
# process begins by importing the script it was started from, so this module: there the check below
# quiets the libraries' loggers before vLLM's first import logs its Triton notice, which it does
# before it configures its own logging (VLLM_LOGGING_LEVEL comes too late for that line). Under
# `python -m vlmcap` the spawned process imports no main module (multiprocessing skips `__main__`
# modules), so the notice shows once per engine process there; the `vlmcap` script is quiet.
QUIET_ENV = "VLMCAP_QUIET_LIBRARIES"


def quiet_library_loggers() -> None:
    """bitsandbytes' optional-kernel notice, vLLM's start-up notices: not ours to show."""
    for library in ("bitsandbytes", "vllm"):
        logging.getLogger(library).setLevel(logging.ERROR)


if os.environ.get(QUIET_ENV) == "1":
    quiet_library_loggers()


class VlmcapGroup(click.Group):
    """Turns every failure into one line on stderr and its own exit code, never a traceback
    (`-v` adds the traceback): a VlmcapError is the user's input (2, or its own code), an OSError
    the system's (74), anything else a bug (70)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise  # click prints its usage errors itself (exit 2)
        except VlmcapError as e:
            click.echo(f"vlmcap: error: {e}", err=True)
            sys.exit(getattr(e, "exit_code", EXIT_USAGE))
        except KeyboardInterrupt:
            click.echo("vlmcap: interrupted", err=True)
            sys.exit(EXIT_SIGINT)
        except OSError as e:
            _traceback_if_verbose(ctx)
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"vlmcap: I/O error: {where}{e.strerror or e}", err=True)
            sys.exit(EXIT_IO)
        except Exception as e:
            _traceback_if_verbose(ctx)
            click.echo(f"vlmcap: internal error: {type(e).__name__}: {e} (run with -v for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)


def _traceback_if_verbose(ctx: click.Context) -> None:
    if ctx.meta.get("vlmcap.verbose"):
        click.echo(traceback.format_exc().rstrip(), err=True)


@click.group(cls=VlmcapGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vlmcap")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Caption videos in bulk with a LLaVA-style vision-language model (Korean by default).

    \b
    Examples:
      vlmcap info                      # what this machine can run
      vlmcap presets list              # offline model presets
      vlmcap config show --preset tiny model.projector.kind=resampler
    """
    ctx.meta["vlmcap.verbose"] = verbose
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Library chatter (weight-loading bars, bitsandbytes' optional-kernel notice) is not ours to show;
        # the env var is read when transformers/huggingface_hub are first imported, which happens later.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM logs every engine detail at INFO
        # Read by the engine processes vLLM starts: torch's C++ notices (vLLM's CPU backend binds
        # memory to a NUMA node and says so) and vLLM's own deprecation warnings.
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
        os.environ.setdefault(QUIET_ENV, "1")  # read by the processes vLLM spawns (above)
        # vLLM's loggers also reach the root handler configured above ("Triton is installed, but ...").
        quiet_library_loggers()


for command in (
    info,
    presets,
    config,
    summary,
    synth,
    train,
    export_cmd,
    inspect,
    demo,
    eval_cmd,
    batch,
    probe,
    bench,
    captions,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="vlmcap")
