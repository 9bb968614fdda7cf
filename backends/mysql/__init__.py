"""The MySQL / MariaDB backend (aiomysql; the medium deployment on MySQL 8 or MariaDB
10.6+): ``MysqlBackend``, and ``migrate`` for the ``runtime migrate`` command."""

from backends.mysql.backend import MysqlBackend
from backends.mysql.schema import migrate

__all__ = ["MysqlBackend", "migrate"]
