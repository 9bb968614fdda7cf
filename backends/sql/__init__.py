"""What every SQL dialect shares: named queries, the migration runner, and the
mapping between rows and the protocol's records.

A dialect (``backends.sqlite``, later ``backends.postgres`` and ``backends.mysql``)
brings its driver, its query file and its migrations; nothing here imports a driver.
"""
