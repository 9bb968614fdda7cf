"""What a task sees while a worker runs it (services.worker.context): its log lines,
its secrets, KV entries and files through templates, its metrics, its working
directory and its kill callbacks."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.memory import MemoryBackend
from backends.storage_local import LocalStorage
from runtime.actors import ProcessPool
from runtime.messages import WorkerJob
from services.worker.context import (
    LogBuffer,
    TaskLogger,
    WorkerRunContext,
    call_kill_callbacks,
    secrets_from_env,
)

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
JOB = WorkerJob(
    execution_id="exec-1",
    task_run_id="run-12345678-abc",
    task_id="task",
    attempt=3,
    namespace="team",
    flow_id="flow",
    flow_revision=2,
    variables={"vars": {"greeting": "hi"}},
)


def context(
    tmp_path: Path, backend: MemoryBackend | None = None, secrets: dict[str, str] | None = None
) -> tuple[WorkerRunContext, LogBuffer]:
    buffer = LogBuffer()
    ctx = WorkerRunContext(
        JOB,
        workdir_parent=str(tmp_path / "work"),
        logger=TaskLogger(JOB, buffer, lambda: AT),
        storage=LocalStorage(tmp_path / "storage"),
        backend=backend or MemoryBackend(),
        pool=ProcessPool(1),
        secrets=secrets or {},
    )
    (tmp_path / "work").mkdir(exist_ok=True)
    return ctx, buffer


def test_a_log_line_names_its_job_and_its_level_in_upper_case(tmp_path: Path) -> None:
    ctx, buffer = context(tmp_path)
    ctx.log.debug("d")
    ctx.log.info("i")
    ctx.log.warning("w")
    ctx.log.error("e")
    ctx.log.log("trace", "t")
    entries = buffer.take()
    assert [(e.level, e.message) for e in entries] == [
        ("DEBUG", "d"),
        ("INFO", "i"),
        ("WARN", "w"),
        ("ERROR", "e"),
        ("TRACE", "t"),
    ]
    first = entries[0]
    assert (first.execution_id, first.namespace, first.flow_id) == ("exec-1", "team", "flow")
    assert (first.task_run_id, first.task_id, first.attempt) == ("run-12345678-abc", "task", 3)
    assert first.timestamp == AT
    assert buffer.take() == []  # taken once


def test_the_context_carries_the_jobs_identity(tmp_path: Path) -> None:
    ctx, _ = context(tmp_path)
    assert (ctx.execution_id, ctx.task_run_id, ctx.task_id) == ("exec-1", JOB.task_run_id, "task")
    assert (ctx.attempt, ctx.namespace, ctx.flow_id) == (3, "team", "flow")
    assert ctx.variables == JOB.variables


@pytest.mark.asyncio
async def test_secrets_render_by_name_or_upper_case_and_are_masked_in_logs(
    tmp_path: Path,
) -> None:
    secrets = {"API_KEY": "abc123", "PIN": "42", "mixed": "MiXeD", "CODE": "xyz"}
    ctx, buffer = context(tmp_path, secrets=secrets)
    assert await ctx.render("{{ secret('api_key') }}") == "abc123"
    assert await ctx.render("{{ secret('mixed') }}") == "MiXeD"
    assert await ctx.render("{{ secret('PIN') }}") == "42"
    assert await ctx.render("{{ secret('code') }}") == "xyz"
    ctx.log.info("key abc123, pin 42, MiXeD, code xyz")
    (entry,) = buffer.take()
    # Kestra's mask, a star per character; a value of two letters is not masked: it
    # would garble every line
    assert entry.message == "key ******, pin 42, *****, code ***"


@pytest.mark.asyncio
async def test_a_missing_secret_says_how_to_set_it(tmp_path: Path) -> None:
    ctx, _ = context(tmp_path, secrets={"OTHER": "x"})
    with pytest.raises(Exception, match=r"secret 'db_pass' is not set: export SECRET_DB_PASS="):
        await ctx.render("{{ secret('db_pass') }}")


@pytest.mark.asyncio
async def test_kv_reads_the_flows_namespace_or_the_one_given(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await backend.kv.set("team", "colour", "blue")
    await backend.kv.set("other", "colour", "red")
    ctx, _ = context(tmp_path, backend)
    assert await ctx.render("{{ kv('colour') }}") == "blue"
    assert await ctx.render("{{ kv('colour', namespace='other') }}") == "red"
    assert await ctx.render("{{ kv('nothing', errorOnMissing=false) }}") == ""
    with pytest.raises(Exception, match=r"no KV entry 'nothing' in namespace 'team'"):
        await ctx.render("{{ kv('nothing') }}")


@pytest.mark.asyncio
async def test_read_returns_a_files_text_replacing_what_is_not_utf8(tmp_path: Path) -> None:
    ctx, _ = context(tmp_path)
    uri = await ctx.storage.put("team", "a.txt", "é \xff".encode("latin-1"))
    assert await ctx.render(f"{{{{ read('{uri}') }}}}") == "\ufffd \ufffd"
    uri = await ctx.storage.put("team", "b.txt", "é".encode())
    assert await ctx.render(f"{{{{ read('{uri}') }}}}") == "é"


@pytest.mark.asyncio
async def test_render_sees_the_jobs_variables_and_the_extra_ones(tmp_path: Path) -> None:
    ctx, _ = context(tmp_path)
    assert await ctx.render("{{ vars.greeting }}") == "hi"
    assert await ctx.render("{{ vars.greeting }} {{ name }}", {"name": "you"}) == "hi you"


def test_a_metric_is_kept_with_its_type_value_and_tags(tmp_path: Path) -> None:
    ctx, _ = context(tmp_path)
    before = datetime.now(UTC)
    ctx.metric("rows", "counter", 3, {"table": "t", "n": 1})  # type: ignore[dict-item]
    ctx.metric("took", "timer", 0.5)
    first, second = ctx.metrics
    assert (first.name, first.type, first.value, first.tags) == (
        "rows",
        "counter",
        3.0,
        {"table": "t", "n": "1"},
    )
    assert isinstance(first.value, float)
    assert before <= first.timestamp <= datetime.now(UTC)  # when it was reported
    assert (second.name, second.type, second.tags) == ("took", "timer", {})
    refusal = "metric 'x' of task 'task': type 'gauge' is none of counter, timer"
    with pytest.raises(ValueError, match=f"^{refusal}$"):
        ctx.metric("x", "gauge", 1)
    assert len(ctx.metrics) == 2


@pytest.mark.asyncio
async def test_the_working_directory_is_made_on_first_use_and_removed_after(
    tmp_path: Path,
) -> None:
    ctx, _ = context(tmp_path)
    await ctx.cleanup()  # none made: nothing to do
    assert list((tmp_path / "work").iterdir()) == []
    folder = ctx.workdir
    assert ctx.workdir == folder  # the same one each time
    assert folder.parent == tmp_path / "work"
    assert folder.name.startswith("runtime-run-1234-")
    (folder / "f").write_text("x")
    await ctx.cleanup()
    assert not folder.exists()


def test_a_warning_is_kept_until_the_attempt_ends(tmp_path: Path) -> None:
    ctx, _ = context(tmp_path)
    assert ctx.warning is None
    ctx.warn("stderr written")
    assert ctx.warning == "stderr written"


def test_every_kill_callback_runs_even_after_one_fails(tmp_path: Path) -> None:
    ctx, _ = context(tmp_path)
    called: list[str] = []

    def broken() -> None:
        called.append("broken")
        raise OSError("process already gone")

    ctx.on_kill(lambda: called.append("first"))
    ctx.on_kill(broken)
    ctx.on_kill(lambda: called.append("last"))
    call_kill_callbacks(ctx)
    assert called == ["first", "broken", "last"]


def test_secrets_from_the_environment_are_base64_and_prefixed() -> None:
    environ = {
        "SECRET_TOKEN": base64.b64encode(b"s3cret").decode(),
        "SECRET_BAD": "not base64!",
        "SECRET_BINARY": base64.b64encode(b"\xff\xfe").decode(),
        "PATH": "/bin",
        "MY_SECRET_X": base64.b64encode(b"no").decode(),
    }
    assert secrets_from_env(environ) == {"TOKEN": "s3cret"}


@pytest.mark.asyncio
async def test_cleanup_of_a_working_directory_a_task_removed_itself_is_quiet(
    tmp_path: Path,
) -> None:
    ctx, _ = context(tmp_path)
    folder = ctx.workdir
    folder.rmdir()  # the task's own doing: the job must still settle
    await ctx.cleanup()
    assert not folder.exists()
