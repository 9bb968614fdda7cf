"""The ``runtime`` command: the composition root of the server components."""

from __future__ import annotations

import sys
from pathlib import Path

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


@cli.group()
def flow() -> None:
    """Check and inspect flow files."""


@flow.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def flow_validate(paths: tuple[Path, ...]) -> None:
    """Check flow files (folders: every *.yml and *.yaml inside, recursively, outside
    hidden folders).

    Prints one `file:line:col: message` line per problem; exits 1 if any.
    """
    from runtime.flow.parse import file_problems

    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise click.UsageError(f"no such file or folder: {path}")
        if path.is_dir():
            files.extend(_flow_files(path))
        else:
            files.append(path)
    invalid = count = 0
    for file in files:
        problems = file_problems(file)
        for problem in problems:
            click.echo(problem.render(str(file)))
        invalid += bool(problems)
        count += len(problems)
    summary = f"{len(files)} flow file(s) checked"
    if invalid:
        summary += f", {invalid} with problems ({count} problem(s))"
    click.echo(summary if files else "no *.yml or *.yaml file found", err=True)
    sys.exit(1 if invalid else 0)


def _flow_files(folder: Path) -> list[Path]:
    """Every *.yml and *.yaml file under ``folder``, outside hidden folders (.git, .venv)."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix in (".yml", ".yaml")
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
