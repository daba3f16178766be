"""What every sandbox component is: a real server with a port, started in three steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol


@dataclass
class SandboxContext:
    """Shared by the components of one sandbox: where they live, the password they use,
    the faults to inject and the ports already chosen (for components that depend on
    others, such as the demo app)."""

    workdir: Path
    password: str
    faults: frozenset[str]
    ports: dict[str, int] = field(default_factory=dict)


class Component(Protocol):
    """A sandbox server. ``prepare`` may run in a worker thread and must leave no process;
    ``launch`` runs in the main thread (see ``process.spawn``); ``ready`` waits and seeds;
    ``inject`` breaks it on purpose once everything is ready."""

    name: ClassVar[str]
    install_hint: ClassVar[str]
    faults: ClassVar[dict[str, str]]  # fault name -> what it does; "<x>-down" = not started
    port: int

    def variables(self) -> dict[str, str]: ...
    def prepare(self) -> None: ...
    def launch(self) -> None: ...
    def ready(self) -> None: ...
    def inject(self, faults: frozenset[str]) -> None: ...
    def stop(self) -> None: ...
