"""The search store's settings (``search.*``), checked once, with errors naming them."""

from __future__ import annotations

import re

import msgspec

from runtime.config import Config, ConfigError

#: Elasticsearch index names: lower case, no separators it reserves
_PREFIX = re.compile(r"[a-z0-9._-]*")
#: the search store types there are
TYPES = ("none", "elasticsearch")


class SearchSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where Elasticsearch is, how to log in, and how indices are named."""

    hosts: tuple[str, ...]
    index_prefix: str = "runtime_"
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    request_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.hosts or any("://" not in h for h in self.hosts):
            raise ConfigError(
                "setting `search.hosts` (or RUNTIME_SEARCH_HOSTS): "
                f"{','.join(self.hosts)!r} is not a comma-separated list of URLs,"
                " e.g. http://127.0.0.1:9200"
            )
        if not _PREFIX.fullmatch(self.index_prefix):
            raise ConfigError(
                f"setting `search.index_prefix` (or RUNTIME_SEARCH_INDEX_PREFIX):"
                f" {self.index_prefix!r} may hold only lower-case letters, digits, '.', '_'"
                " and '-' (Elasticsearch's index name characters)"
            )
        if (self.username is None) != (self.password is None):
            raise ConfigError(
                "settings `search.username` and `search.password` (or RUNTIME_SEARCH_USERNAME"
                " and RUNTIME_SEARCH_PASSWORD) go together: give both or neither"
            )
        if self.request_timeout_seconds <= 0:
            raise ConfigError(
                "setting `search.request_timeout_seconds`: must be more than 0"
                f" (got {self.request_timeout_seconds})"
            )

    @property
    def where(self) -> str:
        """The hosts, for messages."""
        return ", ".join(self.hosts)

    @classmethod
    def from_config(cls, config: Config) -> SearchSettings | None:
        """The settings, or None when ``search.type`` is none."""
        search = config.search
        kind = search.type.lower()
        if kind not in TYPES:
            raise ConfigError(
                f"setting `search.type` (or RUNTIME_SEARCH_TYPE): unknown search store"
                f" {search.type!r} (known: {', '.join(TYPES)})"
            )
        if kind == "none":
            return None
        hosts = tuple(h.strip() for h in (search.hosts or "").split(",") if h.strip())
        if not hosts:
            raise ConfigError(
                "setting `search.hosts` (or RUNTIME_SEARCH_HOSTS) is required for"
                " `search.type: elasticsearch`, e.g. http://127.0.0.1:9200"
            )
        return cls(
            hosts=hosts,
            index_prefix=search.index_prefix,
            username=search.username,
            password=search.password,
            api_key=search.api_key,
            request_timeout_seconds=search.request_timeout_seconds,
        )


def require_search(config: Config) -> SearchSettings | None:
    """The search settings; on the Kafka backend they are required (nothing else can
    list, search or count executions there), so their absence stops every component
    with one message saying what to set."""
    settings = SearchSettings.from_config(config)
    if settings is None and config.backend.type.lower() == "kafka":
        raise ConfigError(
            "the kafka backend needs a search store for the API's lists, searches and stats:"
            " set `search.type: elasticsearch` and `search.hosts` (or"
            " RUNTIME_SEARCH_TYPE=elasticsearch RUNTIME_SEARCH_HOSTS=http://127.0.0.1:9200)"
            " in every component's configuration"
        )
    return settings
