"""The reference backend: every protocol in process memory (tests, `runtime flow test`)."""

from backends.memory.backend import MemoryBackend

__all__ = ["MemoryBackend"]
