"""The ``runtime`` command: the composition root of the server components."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime import __version__
from runtime.config import Config, ConfigError, load_config
from runtime.log import configure_logging

CONFIG_HELP = "settings file (YAML); RUNTIME_* environment variables override it"
SERVER_HELP = (
    "talk to a running server's REST API instead of the backend (env RUNTIME_SERVER); "
    "basic-auth credentials go in the URL: http://user:password@host:8080"
)


def _target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--config`` and ``--server``: the backend the command reads, or a server's API."""
    command = click.option(
        "--server", "server_url", envvar="RUNTIME_SERVER", metavar="URL", help=SERVER_HELP
    )(command)
    return click.option(
        "--config", "config_path", type=click.Path(path_type=Path, exists=True), help=CONFIG_HELP
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runtime")
@click.option(
    "--log-level",
    default=None,
    envvar="RUNTIME_LOG_LEVEL",
    help="DEBUG, INFO, WARNING or ERROR (env RUNTIME_LOG_LEVEL; default INFO, and WARNING "
    "for commands that print results).",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str | None) -> None:
    """runtime: a workflow orchestrator that runs Kestra flows on asyncio.

    \b
    Start everything in one process (SQLite, no server needed):
      runtime run --all --flows examples/flows
    """
    ctx.obj = {"log_level": log_level}


def _logging(ctx: click.Context, default: str) -> None:
    configure_logging(ctx.obj.get("log_level") or default)


def _config(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


# -- run ---------------------------------------------------------------------------------
@cli.command("run")
@click.argument(
    "components",
    nargs=-1,
    type=click.Choice(["executor", "worker", "scheduler", "webserver"]),
)
@click.option("--all", "all_", is_flag=True, help="run every component in this process")
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, exists=True), help=CONFIG_HELP
)
@click.option(
    "--flows",
    "flows_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="deploy every flow in DIR, and redeploy files that change",
)
@click.pass_context
def run(
    ctx: click.Context,
    components: tuple[str, ...],
    all_: bool,
    config_path: Path | None,
    flows_dir: Path | None,
) -> None:
    """Run the server: every component (--all) or the ones named.

    With no config, the embedded SQLite backend and a local storage folder live
    in the data directory ($XDG_DATA_HOME/runtime, else ~/.local/share/runtime;
    set RUNTIME_DATA_DIR to move it). SIGTERM or Ctrl-C stops gracefully; a
    second one stops at once. A component that fails is restarted alone; more
    than 3 restarts within 5 seconds stop the process with status 1, for its
    service manager to start it again.

    \b
    Examples:
      runtime run --all --flows examples/flows
      runtime run executor --config config/medium.yml
      runtime run webserver   # the REST API and the UI alone (medium deployment)
    """
    from services.standalone import ALL_COMPONENTS, Server

    if all_ and components:
        raise click.UsageError("give --all or component names, not both")
    if not all_ and not components:
        raise click.UsageError("name the components to run, or --all (see --help)")
    config = _config(config_path)
    _logging(ctx, config.log_level)
    try:
        server = Server(
            config, components=ALL_COMPONENTS if all_ else components, flows_dir=flows_dir
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    where = (
        f"SQLite at {config.sqlite_path()}"
        if config.backend.type == "sqlite"
        else f"{config.backend.type} backend"
    )
    click.echo(
        f"runtime {__version__}: {', '.join(server.components)} on {where}, "
        + _storage_where(config)
        + (f", flows from {flows_dir}" if flows_dir else "")
        + (
            f", API on http://{config.webserver.host}:{config.webserver.port}"
            if "webserver" in server.components
            else ""
        )
        + ". Ctrl-C stops.",
        err=True,
    )
    from backends.errors import BackendError
    from runtime.actors import SupervisorEscalationError

    try:
        asyncio.run(server.run_until_signalled())
    except (BackendError, ConfigError) as exc:  # not one to wait out: bad credentials, ...
        raise click.ClickException(str(exc)) from None
    except SupervisorEscalationError:
        # Logged once as `supervisor.escalating`; a non-zero status lets the service
        # manager (systemd's Restart=on-failure) start the process again.
        sys.exit(1)


def _storage_where(config: Config) -> str:
    kind = config.storage.type.lower()
    if kind == "local":
        return f"storage in {config.storage_path()}"
    prefix = f"/{config.storage.prefix.strip('/')}" if config.storage.prefix.strip("/") else ""
    at = f" at {config.storage.endpoint_url}" if config.storage.endpoint_url else ""
    return f"{kind} storage in {config.storage.bucket}{prefix}{at}"


# -- flow ----------------------------------------------------------------------------------
@cli.group()
def flow() -> None:
    """Validate, test and deploy flow files."""


@flow.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def flow_validate(paths: tuple[Path, ...]) -> None:
    """Check flow files (folders: every *.yml and *.yaml inside, recursively, outside
    hidden folders).

    Prints one `file:line:col: message` line per problem; exits 1 if any.

    \b
    Example:
      runtime flow validate examples/flows
    """
    from runtime.flow.parse import file_problems

    files = _collect(paths)
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


@flow.command("test")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--flows",
    "flows_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="deploy these flows first (subflows, flow triggers)",
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="KEY=VALUE",
    help="an input of the flow (repeatable); FILE inputs take @path",
)
@click.option(
    "--timeout",
    default="10m",
    show_default=True,
    help="give up after this long: 60s, 5m, 1h or ISO-8601 (PT1M)",
)
@click.option(
    "--json", "as_json", is_flag=True, help="print only the final execution, in Kestra's JSON shape"
)
@click.pass_context
def flow_test(
    ctx: click.Context,
    file: Path,
    flows_dir: Path | None,
    inputs: tuple[str, ...],
    timeout: str,
    as_json: bool,
) -> None:
    """Run one flow to its end (or until it pauses) on a throwaway in-process server.

    Exits 0 when the execution ends SUCCESS or WARNING, 1 otherwise.

    \b
    Example:
      runtime flow test examples/flows/hello.yml --input name=Ada --json
    """
    from runtime.flow.inputs import InputError
    from runtime.flow.loader import FlowError
    from services.cli_output import Progress, print_summary
    from services.flow_test import FlowTestTimeoutError, run_flow_test

    _logging(ctx, "WARNING")
    seconds = _duration_option(timeout, "--timeout")
    progress = None if as_json else Progress(sys.stderr)
    try:
        execution, logs = asyncio.run(
            run_flow_test(
                file,
                flows_dir=flows_dir,
                inputs=_key_values(inputs),
                timeout=seconds,
                on_change=progress.update if progress else None,
            )
        )
    except FlowError as exc:
        for problem in exc.problems:
            click.echo(problem.render(str(file)), err=True)
        sys.exit(1)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    except FlowTestTimeoutError as exc:
        click.echo(f"error: {exc}", err=True)
        if as_json and exc.execution is not None:
            _print_json(exc.execution)
        sys.exit(1)
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        _print_json(execution)
    else:
        print_summary(execution, logs)
    sys.exit(0 if execution.state.current.value in ("SUCCESS", "WARNING") else 1)


@flow.command("deploy")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, exists=True), help=CONFIG_HELP
)
@click.pass_context
def flow_deploy(ctx: click.Context, paths: tuple[Path, ...], config_path: Path | None) -> None:
    """Store flow files as new revisions in the configured backend.

    Invalid files are reported and skipped; exits 1 if any was invalid.

    \b
    Example:
      runtime flow deploy examples/flows
    """
    from runtime.flow.loader import FlowError
    from services.flows import deploy_file
    from services.standalone import make_backend

    config = _config(config_path)
    _logging(ctx, "WARNING")

    async def deploy() -> int:
        backend = make_backend(config)
        await backend.start()
        failed = 0
        try:
            for file in _collect(paths):
                try:
                    record = await deploy_file(backend.flows, file)
                except FlowError as exc:
                    failed += 1
                    for problem in exc.problems:
                        click.echo(problem.render(str(file)), err=True)
                    continue
                click.echo(f"{file}: {record.namespace}.{record.id} revision {record.revision}")
        finally:
            await backend.stop()
        return failed

    sys.exit(1 if asyncio.run(deploy()) else 0)


@cli.command("migrate")
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, exists=True), help=CONFIG_HELP
)
@click.pass_context
def migrate(ctx: click.Context, config_path: Path | None) -> None:
    """Bring the configured database's schema up to date, then exit.

    Components also migrate when they start (once, under a lock, even when several
    start together); run this to do it ahead of a deployment. On Kafka it creates
    the missing topics (backend.partitions, backend.replication_factor; existing
    topics are left as they are); the Kafka backend cannot run components yet.

    \b
    Example:
      RUNTIME_BACKEND_TYPE=postgres RUNTIME_BACKEND_DSN=postgresql://runtime@db/runtime \\
        runtime migrate
      RUNTIME_BACKEND_TYPE=kafka RUNTIME_BACKEND_BOOTSTRAP_SERVERS=127.0.0.1:9092 \\
        runtime migrate
    """
    from backends.errors import BackendError
    from services.standalone import make_backend

    config = _config(config_path)
    _logging(ctx, "WARNING")
    if config.backend.type.lower() == "kafka":
        _migrate_kafka(config)
        return

    async def go() -> None:
        backend = make_backend(config)
        await backend.start()  # applies pending migrations
        await backend.stop()

    try:
        asyncio.run(go())
    except BackendError as exc:  # unreachable, bad credentials, unsupported server, ...
        raise click.ClickException(str(exc)) from None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"the {config.backend.type} schema is up to date")


def _migrate_kafka(config: Config) -> None:
    """Create the Kafka backend's topics (``backends.kafka.topics.migrate``)."""
    from backends.errors import BackendError

    try:
        from backends.kafka.settings import KafkaSettings
        from backends.kafka.topics import migrate as migrate_topics
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "aiokafka":
            raise
        raise click.ClickException(
            "setting `backend.type`: Kafka needs the driver 'aiokafka', which this install"
            " lacks; install it with: pip install 'runtime[kafka]'"
        ) from None
    try:
        settings = KafkaSettings.from_config(config)
        created = asyncio.run(migrate_topics(settings))
    except (BackendError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    for name in created:
        click.echo(f"created topic {name}")
    click.echo(f"the Kafka topics under prefix {settings.topic_prefix!r} exist")


# -- execute, logs ------------------------------------------------------------------------
@cli.command("execute")
@click.argument("namespace")
@click.argument("flow_id")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="KEY=VALUE",
    help="an input of the flow (repeatable); FILE inputs take @path",
)
@click.option("--wait", is_flag=True, help="wait for the execution to end")
@click.option("--json", "as_json", is_flag=True, help="print the execution as JSON")
@_target_options
@click.pass_context
def execute(
    ctx: click.Context,
    namespace: str,
    flow_id: str,
    inputs: tuple[str, ...],
    wait: bool,
    as_json: bool,
    config_path: Path | None,
    server_url: str | None,
) -> None:
    """Start an execution of a deployed flow (a running server carries it out).

    \b
    Example:
      runtime execute company.team hello --input name=Ada --wait
      runtime execute company.team hello --server http://127.0.0.1:8080
    """
    from runtime.flow.inputs import InputError
    from services.cli_output import Progress
    from services.client import NoServerError
    from services.remote_client import RemoteError

    _logging(ctx, "WARNING")
    config = None if server_url else _config(config_path)
    # Task runs as they start and end: a live table on a terminal, lines on a pipe.
    progress = Progress(sys.stderr) if wait and not as_json else None

    async def go() -> Any:
        async with _client(config, server_url) as client:
            if wait:
                # Before creating it: an execution nobody would run is not waited on.
                await client.check_server()
            execution = await client.execute(namespace, flow_id, _key_values(inputs))
            if wait:
                click.echo(f"{execution.id} {execution.state.current.value}", err=True)
                execution = await client.wait(
                    execution.id, on_change=progress.update if progress else None
                )
            return execution

    try:
        execution = asyncio.run(go())
    except (InputError, LookupError, RemoteError, NoServerError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        _print_json(execution)
    else:
        click.echo(f"{execution.id} {execution.state.current.value}")
    if wait:
        sys.exit(0 if execution.state.current.value in ("SUCCESS", "WARNING") else 1)


@cli.command("logs")
@click.argument("execution_id")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the execution ends")
@_target_options
@click.pass_context
def logs(
    ctx: click.Context,
    execution_id: str,
    follow: bool,
    config_path: Path | None,
    server_url: str | None,
) -> None:
    """Print an execution's logs.

    \b
    Example:
      runtime logs 4wjLBTw5oKlZMaZzmX5cVp --follow
      runtime logs 4wjLBTw5oKlZMaZzmX5cVp --server http://127.0.0.1:8080
    """
    from services.cli_output import format_log
    from services.remote_client import RemoteError

    _logging(ctx, "WARNING")
    config = None if server_url else _config(config_path)

    async def go() -> None:
        async with _client(config, server_url) as client:
            async for entry in client.logs(execution_id, follow=follow):
                click.echo(format_log(entry))

    try:
        asyncio.run(go())
    except (LookupError, RemoteError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None


# -- executions, triggers -----------------------------------------------------------
@cli.group("executions")
def executions() -> None:
    """List and show executions (on the backend, or a server's API with --server)."""


@executions.command("list")
@click.option("--namespace", "-n", help="this namespace and the ones below it")
@click.option("--flow", "flow_id", help="executions of this flow id")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="in this state (repeatable): RUNNING, SUCCESS, FAILED, ...",
)
@click.option("--label", "labels", multiple=True, metavar="KEY:VALUE", help="with this label")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="print Kestra's JSON: results and total")
@_target_options
@click.pass_context
def executions_list(
    ctx: click.Context,
    namespace: str | None,
    flow_id: str | None,
    states: tuple[str, ...],
    labels: tuple[str, ...],
    limit: int,
    as_json: bool,
    config_path: Path | None,
    server_url: str | None,
) -> None:
    """The newest executions first, with their state and duration.

    \b
    Example:
      runtime executions list --namespace company --state FAILED --limit 5
    """
    from backends.protocols import ExecutionFilter
    from runtime.flow.execution import to_kestra_dict
    from runtime.flow.states import StateType
    from services.cli_output import print_executions
    from services.remote_client import RemoteError

    _logging(ctx, "WARNING")
    try:
        wanted = tuple(StateType(s.upper()) for s in states) or None
    except ValueError as exc:
        known = ", ".join(s.value for s in StateType)
        raise click.BadParameter(f"{exc}; known states: {known}", param_hint="--state") from None
    pairs = []
    for label in labels:
        key, sep, value = label.partition(":")
        if not sep or not key:
            raise click.BadParameter(f"{label!r}: write KEY:VALUE", param_hint="--label")
        pairs.append((key, value))
    where = ExecutionFilter(
        namespace=namespace, flow_id=flow_id, states=wanted, labels=tuple(pairs)
    )
    config = None if server_url else _config(config_path)

    async def go() -> tuple[list[Any], int]:
        async with _client(config, server_url) as client:
            found: tuple[list[Any], int] = await client.search(where, limit=limit)
            return found

    try:
        found, total = asyncio.run(go())
    except (LookupError, RemoteError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    if as_json:
        results = [to_kestra_dict(e) for e in found]
        click.echo(json.dumps({"results": results, "total": total}, indent=2, default=str))
    else:
        print_executions(found, total, sys.stdout)


@executions.command("show")
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="print the execution as Kestra's JSON")
@_target_options
@click.pass_context
def executions_show(
    ctx: click.Context,
    execution_id: str,
    as_json: bool,
    config_path: Path | None,
    server_url: str | None,
) -> None:
    """One execution with its task runs, their states and durations.

    \b
    Example:
      runtime executions show 4wjLBTw5oKlZMaZzmX5cVp
    """
    from services.cli_output import print_execution
    from services.remote_client import RemoteError

    _logging(ctx, "WARNING")
    config = None if server_url else _config(config_path)

    async def go() -> Any:
        async with _client(config, server_url) as client:
            return await client.get(execution_id)

    try:
        execution = asyncio.run(go())
    except (LookupError, RemoteError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    if as_json:
        _print_json(execution)
    else:
        print_execution(execution, sys.stdout)


@cli.group("triggers")
def triggers() -> None:
    """The triggers of the deployed flows."""


@triggers.command("list")
@click.option("--namespace", "-n", help="this namespace and the ones below it")
@click.option("--flow", "flow_id", help="triggers of this flow id")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@_target_options
@click.pass_context
def triggers_list(
    ctx: click.Context,
    namespace: str | None,
    flow_id: str | None,
    as_json: bool,
    config_path: Path | None,
    server_url: str | None,
) -> None:
    """Every trigger with its type, status and next fire date.

    \b
    Example:
      runtime triggers list --namespace company
    """
    from services.cli_output import print_triggers
    from services.remote_client import RemoteError

    _logging(ctx, "WARNING")
    config = None if server_url else _config(config_path)

    async def go() -> list[dict[str, Any]]:
        async with _client(config, server_url) as client:
            found: list[dict[str, Any]] = await client.triggers(namespace, flow_id)
            return found

    try:
        found = asyncio.run(go())
    except (LookupError, RemoteError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
    else:
        print_triggers(found, sys.stdout)


# -- bench ---------------------------------------------------------------------------------
@cli.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmark harness (as python -m bench; runtime bench --help).

    \b
    runtime bench [MEASURE ...] [--quick] [--backend B ...] [--out DIR]
    """
    from bench.__main__ import main as bench_main

    raise SystemExit(bench_main(list(args), prog="runtime bench"))


# -- helpers ------------------------------------------------------------------------------
def _client(config: Config | None, server_url: str | None) -> Any:
    """The REST API's client with a server URL, else one on the configured backend."""
    if server_url:
        from services.remote_client import RemoteClient

        return RemoteClient(server_url)
    from services.client import LocalClient

    assert config is not None
    return LocalClient(config)


def _collect(paths: tuple[Path, ...]) -> list[Path]:
    from services.flows import flow_files

    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise click.UsageError(f"no such file or folder: {path}")
        files.extend(flow_files(path) if path.is_dir() else [path])
    return files


def _key_values(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write KEY=VALUE", param_hint="--input")
        out[key] = value
    return out


def _duration_option(text: str, name: str) -> float:
    from runtime.flow.durations import DurationError, parse_duration

    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for suffix in sorted(units, key=len, reverse=True):
        number = text.removesuffix(suffix)
        if number != text:
            try:
                return float(number) * units[suffix]
            except ValueError:
                break
    try:
        return parse_duration(text).total_seconds()
    except DurationError:
        raise click.BadParameter(
            f"{text!r}: write e.g. 60s, 5m, 1h or PT1M", param_hint=name
        ) from None


def _print_json(execution: Any) -> None:
    from runtime.flow.execution import to_kestra_dict

    click.echo(json.dumps(to_kestra_dict(execution), indent=2, default=str))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
