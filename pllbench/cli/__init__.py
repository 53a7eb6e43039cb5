"""The `pllbench` command line: the group, one module per command, and `main` (the console script).

Layout: common.py (default preset, results root, device, error output, shared options), grid_options.py (the grid
options of `run` and `status`, defined once), and a module per command: listing (`list`), describe, candidates,
run, status, leaderboard, entangle, augment, export, tune. A command module never imports this package, so the graph
stays acyclic (tests/test_import_graph.py).
"""

from __future__ import annotations

import sys

import click

from ..errors import PllbenchError, os_error_message
from ..interrupts import EXIT_CODES, INTERRUPTS, signal_name, sigterm_raises
from . import augment, candidates, describe, entangle, export, leaderboard, listing, run, status, tune
from .common import echo_err

# The package's names augment, run, ... stay the command modules (monkeypatch targets like pllbench.cli.run.launch).
COMMANDS = (listing.list_cmd, describe.describe, candidates.candidates, run.run, status.status,
            leaderboard.leaderboard, entangle.entangle, augment.augment_cmd, export.export, tune.tune)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})  # inherited by every command
@click.version_option(package_name="pllbench", prog_name="pllbench", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx, debug):
    """pllbench: partial-label learning under instance-dependent candidate labels."""
    ctx.obj = {"debug": debug}


for _command in COMMANDS:
    cli.add_command(_command)


def main(argv=None) -> int:
    """Run the command line; bad input is one `error:` line and a non-zero status (--debug: the traceback). Ctrl-C
    and SIGTERM stop it in one line, exit 130 and 143 (pllbench.interrupts)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        with sigterm_raises():
            cli.main(args=argv, prog_name="pllbench", standalone_mode=False)
    except (click.exceptions.Abort, *INTERRUPTS) as exc:
        # click turns a KeyboardInterrupt into Abort (from it); an Abort of its own (EOF at a prompt) is not one.
        cause = exc.__cause__ if isinstance(exc, click.exceptions.Abort) else exc
        if not isinstance(cause, INTERRUPTS):
            echo_err("error: aborted")
            return 1
        name = signal_name(cause)
        echo_err(f"error: interrupted ({name}); finished work is kept, rerun the same command to resume")
        return EXIT_CODES[name]
    except click.ClickException as exc:
        if debug:
            raise
        message = " ".join(exc.format_message().split())
        if isinstance(exc, click.UsageError):
            message += f" (see `{exc.ctx.command_path if exc.ctx else 'pllbench'} --help`)"
        echo_err(f"error: {message}")
        return exc.exit_code or 2
    except PllbenchError as exc:
        if debug:
            raise
        echo_err(f"error: {exc}")
        return 2
    except OSError as exc:  # a full disk, a refused write, ...: finished files are complete (atomic writes)
        if debug:
            raise
        echo_err(f"error: {os_error_message(exc)}")
        return 2
    return 0
