"""Companions: programs ``punktfunk serve`` runs beside the host and stops with it.

The web console is one (the ``console`` plugin); the
core knows none by name. A plugin adds one through the ``serve_companions``
hook. ``serve`` then, in this order: lets each companion add its options
(:meth:`Companion.add_serve_arguments`) and apply them to the config
(:meth:`Companion.configure`); refuses to start, in one line each, when an
enabled companion has a :meth:`Companion.problem` (``config check`` says the
same); starts the host; starts each enabled companion (:meth:`Companion.start`,
after the host answers IPC) and prints what it says about itself; and on
Ctrl-C, SIGTERM or SIGHUP stops the companions before the host.
"""

from __future__ import annotations

import abc
import argparse
from typing import Any, Protocol

from punktfunk_core.paths import Paths


class RunningCompanion(Protocol):
    """What :meth:`Companion.start` returns."""

    def describe(self) -> str:
        """The line ``serve`` prints once it runs (where to find it)."""

    def stop(self) -> Any:
        """Stop it; must return within a few seconds."""


class Companion(abc.ABC):
    """Base class of a companion. ``name`` is its config section, whose
    ``enabled`` says whether ``serve`` starts it."""

    name: str = ""

    def enabled(self, config: dict[str, Any]) -> bool:
        return bool(config.get(self.name, {}).get("enabled", False))

    def add_serve_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027 - optional hook, no-op by default
        """Add the options of ``punktfunk serve`` that concern this companion."""

    def configure(self, config: dict[str, Any], args: argparse.Namespace) -> None:  # noqa: B027 - optional hook, no-op by default
        """Apply those options to the (validated) config, before anything starts."""

    def problem(self, config: dict[str, Any], paths: Paths) -> str | None:
        """One line on why ``serve`` must not start with this config (``config
        check`` reports it too), or None."""
        return None

    @abc.abstractmethod
    def start(self, config: dict[str, Any], paths: Paths) -> RunningCompanion:
        """Start beside the running host and return once it serves. Raise when it
        cannot: the host runs on without it, and ``serve`` names the reason if
        nothing else started either."""
