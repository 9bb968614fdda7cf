"""The ``runtime`` command: the composition root of the server components."""

from __future__ import annotations

import click

from runtime import __version__
from runtime.log import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runtime")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="RUNTIME_LOG_LEVEL",
    help="DEBUG, INFO, WARNING or ERROR (env RUNTIME_LOG_LEVEL).",
)
def cli(log_level: str) -> None:
    """runtime: a workflow orchestrator that runs Kestra flows on asyncio."""
    configure_logging(log_level)


def main() -> None:
    cli()
