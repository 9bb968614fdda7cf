"""Everything that does I/O against an external system, behind typing.Protocols."""
