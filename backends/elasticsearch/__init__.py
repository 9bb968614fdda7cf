"""Elasticsearch: the webserver's search store in the high-availability size (issue 14).

The indexer (``services/indexer.py``) writes the documents; the repositories here
read them; ``SearchBackend`` puts them in front of the primary backend for the
webserver (lists, searches and stats from here, reads by id from the primary).
"""

from backends.elasticsearch.settings import SearchSettings, require_search

__all__ = ["SearchSettings", "require_search"]
