"""Names for actors: look up an ActorRef by the name it was registered under."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.actors.actor import ActorRef


class ActorNotFoundError(LookupError):
    """No actor is registered under that name."""


class NameTakenError(ValueError):
    """Another live actor already holds that name."""


class Registry:
    """A map of names to refs, shared by a whole actor system."""

    def __init__(self) -> None:
        self._refs: dict[str, ActorRef[Any]] = {}

    def register(self, name: str, ref: ActorRef[Any]) -> None:
        current = self._refs.get(name)
        if current is not None and current is not ref and current.alive:
            raise NameTakenError(f"an actor named {name!r} is already registered")
        self._refs[name] = ref

    def unregister(self, name: str, ref: ActorRef[Any] | None = None) -> None:
        """Forget ``name``; with ``ref``, only if the name still points to that ref."""
        if ref is None or self._refs.get(name) is ref:
            self._refs.pop(name, None)

    def get(self, name: str) -> ActorRef[Any] | None:
        return self._refs.get(name)

    def lookup(self, name: str) -> ActorRef[Any]:
        try:
            return self._refs[name]
        except KeyError:
            known = ", ".join(sorted(self._refs)) or "none"
            raise ActorNotFoundError(
                f"no actor named {name!r} is registered (registered: {known})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._refs)

    def __contains__(self, name: object) -> bool:
        return name in self._refs
