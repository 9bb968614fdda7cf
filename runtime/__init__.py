"""runtime: a workflow orchestrator in the Kestra architecture, on asyncio.

This package is the kernel: the actor system, the flow language and the pure
execution engine. It performs no network or database I/O of its own.
"""

__version__ = "0.1.0"
