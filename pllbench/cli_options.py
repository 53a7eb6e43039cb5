"""Click options shared by several commands (kept apart from cli.py so command modules can import them)."""

import click


def common_data_options(fn):
    fn = click.option("--data-root", default=None, help="Folder holding the datasets (else $PLLBENCH_DATA).")(fn)
    fn = click.option("--download", is_flag=True, help="Allow fetching a missing dataset over the network.")(fn)
    fn = click.option("--cache-dir", default=None, help="Artifact cache (else $PLLBENCH_CACHE, ~/.cache/pllbench).")(fn)
    fn = click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")(fn)
    return fn
