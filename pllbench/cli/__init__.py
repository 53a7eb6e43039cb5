"""The `pllbench` command line: the group, one module per command, and `main` (the console script).

Layout: common.py (default preset, results root, device, error output, shared options), grid_options.py (the grid
options of `run` and `status`, defined once), and a module per command: listing (`list`), describe, candidates,
run, status, leaderboard, entangle, augment, export. A command module never imports this package, so the graph
stays acyclic (tests/test_import_graph.py).
"""

from __future__ import annotations

import sys

import click

from ..errors import PllbenchError, os_error_message
from . import augment, candidates, describe, entangle, export, leaderboard, listing, run, status
from .common import echo_err

# The package's names augment, run, ... stay the command modules (monkeypatch targets like pllbench.cli.run.launch).
COMMANDS = (listing.list_cmd, describe.describe, candidates.candidates, run.run, status.status,
            leaderboard.leaderboard, entangle.entangle, augment.augment_cmd, export.export)


@click.group()
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx, debug):
    """pllbench: partial-label learning under instance-dependent candidate labels."""
    ctx.obj = {"debug": debug}


for _command in COMMANDS:
    cli.add_command(_command)


def main(argv=None) -> int:
    """Run the command line; bad input is one `error:` line and a non-zero status (--debug: the traceback)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="pllbench", standalone_mode=False)
    except click.exceptions.Abort:
        echo_err("error: interrupted")
        return 130
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
    except KeyboardInterrupt:
        echo_err("error: interrupted; finished work is kept, rerun the same command to resume")
        return 130
    return 0
