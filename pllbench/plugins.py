"""Registries filled by import: after the built-in modules (which register themselves), every installed entry point
of a group. Shared by the method and dataset registries."""

from __future__ import annotations

import re
from importlib.metadata import entry_points

from .errors import PllbenchError, exception_text

# A method or dataset name: it names run folders.
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,63}")


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
