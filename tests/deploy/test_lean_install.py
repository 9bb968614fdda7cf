"""The base install runs the embedded size; a backend whose extra is missing says which."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from runtime.config import BackendConfig, Config, ConfigError
from services import standalone

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("kind", "driver"), [("postgres", "asyncpg"), ("mysql", "aiomysql"), ("kafka", "aiokafka")]
)
def test_a_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, kind: str, driver: str
) -> None:
    # As if the driver were not installed: the backend's package imports it first.
    for name in list(sys.modules):
        if name == driver or name.startswith((f"{driver}.", f"backends.{kind}")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, driver, None)
    config = Config(backend=BackendConfig(type=kind, dsn="x://127.0.0.1/test"))
    with pytest.raises(ConfigError) as caught:
        standalone.make_backend(config)
    message = str(caught.value)
    assert f"pip install 'runtime[{kind}]'" in message
    assert driver in message


def test_another_missing_module_is_not_blamed_on_an_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(standalone._BACKENDS, "postgres", ("backends.no_such_module", "X"))
    config = Config(backend=BackendConfig(type="postgres", dsn="x://127.0.0.1/test"))
    with pytest.raises(ModuleNotFoundError):
        standalone.make_backend(config)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_fresh_base_install_runs_a_flow_and_refuses_postgres(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        check=True,
        timeout=540,
    )
    lacking = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('asyncpg'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert lacking.stdout.strip() == "None", "the base install must not pull asyncpg"
    runtime = env_dir / "bin" / "runtime"
    flow = tmp_path / "hello.yml"
    flow.write_text(
        textwrap.dedent(
            """\
            id: lean
            namespace: deploy.check
            tasks:
              - id: say
                type: io.kestra.plugin.core.debug.Return
                format: "lean {{ 1 + 1 }}"
            """
        )
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RUNTIME_DATA_DIR": str(tmp_path / "d")}
    ran = subprocess.run(
        [str(runtime), "flow", "test", str(flow), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert '"SUCCESS"' in ran.stdout
    assert "lean 2" in ran.stdout
    refused = subprocess.run(
        [str(runtime), "migrate"],
        capture_output=True,
        text=True,
        env={
            **env,
            "RUNTIME_BACKEND_TYPE": "postgres",
            "RUNTIME_BACKEND_DSN": "postgresql://127.0.0.1:5432/test",
        },
        timeout=120,
    )
    assert refused.returncode != 0
    assert "pip install 'runtime[postgres]'" in refused.stderr + refused.stdout
