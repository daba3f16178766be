"""Docker remediation: the runbooks' fixes, each enabled per target (``remediation:``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.docker import (
    RestartUnhealthy,
    RestartUnhealthySettings,
    await_health,
)

if TYPE_CHECKING:
    from opsverify.targets.docker import DockerClient


@pytest.mark.destructive
def test_restart_unhealthy(
    docker_admin: DockerClient, docker_restart_unhealthy: RestartUnhealthySettings,
    remediation: Gate, evidence: EvidenceLog,
) -> None:
    """Restart, by id, the declared containers unhealthy for longer than ``unhealthy_for_s``,
    then re-check what test_container_health judges, once each restarted container's first
    health probe has run (a bounded wait, shown in the evidence)."""
    action = RestartUnhealthy(docker_admin, docker_restart_unhealthy)
    considered = action.considered()
    outcome = remediation.run(action, population=len(considered))
    restarted = {item.ref.name for item, _ in outcome.applied}
    for name in considered:
        settled = await_health(docker_admin, name)
        state = settled.state
        if name in restarted:
            evidence.note(f"{name} waited for its first health probe", round(settled.waited_s, 1),
                          unit=f"s (at most {settled.bound_s:g} s)")
        if state is None:
            evidence.expect(f"containers named {name!r}", 0, at_least=1)
            continue
        if state.health is None:
            evidence.note(f"{state.name} health", "no HEALTHCHECK")
            continue
        shown = state.health if state.health == "healthy" else (
            f"{state.health}: {state.last_health_output or 'no output'}")
        evidence.expect(f"{state.name} health", shown, equals="healthy")
