"""The errors a backend raises, whatever the system behind it. Drivers' own errors are
translated into these at the backend's boundary; callers retry on Transient only."""


class BackendError(Exception):
    """Base of every backend error."""


class Transient(BackendError):
    """Try again later: the system is unreachable, busy, or a lock timed out."""


class NotFound(BackendError):
    """The thing asked for does not exist."""


class Conflict(BackendError):
    """The write clashes with the current state (a duplicate, a stale revision)."""


class OutOfRange(BackendError):
    """The request asks for more than the store serves (a page past a search store's
    result window): the caller must narrow it."""
