"""PostgreSQL schema migrations, ``NNNN_name.sql``, applied in order at start-up under
an advisory lock (see ``backends.postgres.schema``)."""
