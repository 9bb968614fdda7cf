"""The `search` settings, the Kafka backend's need for them, and the components
that refuse to start without them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from backends.elasticsearch.settings import SearchSettings, require_search
from runtime.config import ConfigError, load_config
from services.cli import cli
from services.standalone import ALL_COMPONENTS, Server, all_components


def test_environment_selects_elasticsearch() -> None:
    config = load_config(
        environ={
            "RUNTIME_SEARCH_TYPE": "elasticsearch",
            "RUNTIME_SEARCH_HOSTS": "http://127.0.0.1:9200, http://127.0.0.1:9201",
            "RUNTIME_SEARCH_INDEX_PREFIX": "prod_",
            "RUNTIME_SEARCH_USERNAME": "elastic",
            "RUNTIME_SEARCH_PASSWORD": "secret",
        }
    )
    settings = SearchSettings.from_config(config)
    assert settings is not None
    assert settings.hosts == ("http://127.0.0.1:9200", "http://127.0.0.1:9201")
    assert settings.index_prefix == "prod_"
    assert (settings.username, settings.password) == ("elastic", "secret")
    assert all_components(config) == (*ALL_COMPONENTS, "indexer")


def test_no_search_by_default() -> None:
    config = load_config(environ={})
    assert SearchSettings.from_config(config) is None
    assert all_components(config) == ALL_COMPONENTS


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"RUNTIME_SEARCH_TYPE": "solr"}, "search.type"),
        ({"RUNTIME_SEARCH_TYPE": "elasticsearch"}, "search.hosts"),
        (
            {"RUNTIME_SEARCH_TYPE": "elasticsearch", "RUNTIME_SEARCH_HOSTS": "127.0.0.1:9200"},
            "search.hosts",
        ),
        (
            {
                "RUNTIME_SEARCH_TYPE": "elasticsearch",
                "RUNTIME_SEARCH_HOSTS": "http://h:9200",
                "RUNTIME_SEARCH_INDEX_PREFIX": "Bad*",
            },
            "search.index_prefix",
        ),
        (
            {
                "RUNTIME_SEARCH_TYPE": "elasticsearch",
                "RUNTIME_SEARCH_HOSTS": "http://h:9200",
                "RUNTIME_SEARCH_USERNAME": "elastic",
            },
            "search.password",
        ),
    ],
)
def test_bad_settings_name_the_setting(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        SearchSettings.from_config(load_config(environ=environ))


KAFKA = {"RUNTIME_BACKEND_TYPE": "kafka", "RUNTIME_BACKEND_BOOTSTRAP_SERVERS": "127.0.0.1:9"}


def test_kafka_without_search_is_refused_with_one_message() -> None:
    config = load_config(environ=KAFKA)
    with pytest.raises(ConfigError, match="kafka backend needs a search store") as caught:
        require_search(config)
    assert "RUNTIME_SEARCH_TYPE=elasticsearch" in str(caught.value)
    # every component checks it before it builds anything
    for component in ("executor", "worker", "scheduler", "webserver"):
        with pytest.raises(ConfigError, match="kafka backend needs a search store"):
            Server(config, components=[component])


def test_search_needs_kafka(tmp_path: Path) -> None:
    config = load_config(
        environ={
            "RUNTIME_DATA_DIR": str(tmp_path),
            "RUNTIME_SEARCH_TYPE": "elasticsearch",
            "RUNTIME_SEARCH_HOSTS": "http://127.0.0.1:9",
        }
    )
    with pytest.raises(ConfigError, match=r"needs `backend\.type: kafka`"):
        Server(config, components=["webserver"])


def test_indexer_needs_search(tmp_path: Path) -> None:
    config = load_config(environ={"RUNTIME_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="the indexer fills the search store"):
        Server(config, components=["indexer"])


def test_cli_run_refuses_kafka_without_search() -> None:
    result = CliRunner().invoke(cli, ["run", "executor"], env=KAFKA)
    assert result.exit_code != 0
    assert "kafka backend needs a search store" in result.output


def test_cli_knows_the_indexer() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert "indexer" in result.output
