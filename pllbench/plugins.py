"""Registries filled by import: after the built-in modules (which register themselves), every installed entry point
of a group. Shared by the method and dataset registries."""

from __future__ import annotations

from importlib.metadata import entry_points

from .errors import PllbenchError, exception_text


def load_entry_points(group: str, kind: str) -> None:
    """Import each entry point of `group`; a plugin that fails to import is one line naming it."""
    for ep in entry_points(group=group):
        try:
            ep.load()
        except PllbenchError:
            raise
        except Exception as exc:
            raise PllbenchError(f"the {kind} plugin {ep.name} = {ep.value} (entry point {group}) failed to import: "
                                f"{exception_text(exc)}") from exc
