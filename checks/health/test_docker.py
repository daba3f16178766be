"""Docker health: the gogooku3 runbook's ``docker ps``, container by declared container.

Each declared container (or ``name-*`` pattern) must exist, run, pass its HEALTHCHECK and
not keep restarting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold, Verdict

if TYPE_CHECKING:
    from opsverify.targets.docker import ContainerState, DeclaredContainer, DockerClient


@dataclass(frozen=True)
class ContainersFound:
    """The containers a declaration names, and (only when none matched) every container
    name on the engine, for the failure to show what is there instead."""

    states: tuple[ContainerState, ...]
    names: tuple[str, ...] = ()


def _read(docker: DockerClient, declared: DeclaredContainer) -> ContainersFound:
    states = tuple(docker.matching(declared))
    return ContainersFound(states, () if states else tuple(docker.names()))


# Every check of a declaration judges the same `docker inspect`: one read per declared
# name, prefetched in the probe pool, shared by the four checks.
@probe(key=lambda docker, docker_container: ("inspect", docker_container.name))
def docker_containers_found(docker: DockerClient,
                            docker_container: DeclaredContainer) -> ContainersFound:
    return _read(docker, docker_container)


@probe(key=lambda docker, docker_healthcheck: ("inspect", docker_healthcheck.name))
def docker_healthchecks_found(docker: DockerClient,
                              docker_healthcheck: DeclaredContainer) -> ContainersFound:
    return _read(docker, docker_healthcheck)


def _found(docker: DockerClient, declared: DeclaredContainer, found: ContainersFound,
           evidence: EvidenceLog) -> tuple[ContainerState, ...]:
    """The containers a declaration names; none found is a failure of every check."""
    states = found.states
    what = "containers matching" if declared.is_pattern else "containers named"
    evidence.expect(f"{what} {declared.name!r}", len(states), at_least=1,
                    source=evidence.source_of("targets", docker.name, "containers",
                                              declared.name))
    if not states:
        evidence.note("containers on the engine", ", ".join(found.names[:20]) or "none")
    return states


def _state(state: ContainerState) -> str:
    """``running``, or what stopped it: ``exited (exit code 2, OOM-killed)``."""
    if state.status == "running":
        return state.status
    why = [f"exit code {state.exit_code}"] + ["OOM-killed"] * state.oom_killed
    return f"{state.status} ({', '.join(why + ([state.error] if state.error else []))})"


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_container_exists(docker: DockerClient, docker_container: DeclaredContainer,
                          docker_containers_found: ContainersFound, evidence: EvidenceLog) -> None:
    """A declared container exists on the engine, running or not."""
    for state in _found(docker, docker_container, docker_containers_found, evidence):
        evidence.note(f"{state.name} image", state.image)
        evidence.note(f"{state.name} id", state.id)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_container_running(docker: DockerClient, docker_container: DeclaredContainer,
                           docker_containers_found: ContainersFound, evidence: EvidenceLog) -> None:
    """A declared container is running (not exited, restarting, paused or dead)."""
    for state in _found(docker, docker_container, docker_containers_found, evidence):
        evidence.expect(f"{state.name} state", _state(state), equals="running")
        if state.status == "running":
            evidence.note(f"{state.name} started at", state.started_at)
            continue
        evidence.note(f"{state.name} exit code", state.exit_code)
        evidence.note(f"{state.name} finished at", state.finished_at)
        evidence.note(f"{state.name} restart policy", state.restart_policy)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_container_health(docker: DockerClient, docker_healthcheck: DeclaredContainer,
                          docker_healthchecks_found: ContainersFound,
                          evidence: EvidenceLog) -> None:
    """A declared container's HEALTHCHECK reports ``healthy``.

    ``health: healthy`` also requires the container to have a HEALTHCHECK.
    """
    checked = 0
    for state in _found(docker, docker_healthcheck, docker_healthchecks_found, evidence):
        if state.health is None:
            if docker_healthcheck.health == "healthy":
                evidence.expect(f"{state.name} has a HEALTHCHECK", False, equals=True,
                                source=evidence.source_of("targets", docker.name, "containers",
                                                          docker_healthcheck.name, "health"))
            else:
                evidence.note(f"{state.name} health", "no HEALTHCHECK")
            continue
        checked += 1
        # Not healthy: the value carries the last probe's output, so the failure says why.
        shown = state.health if state.health == "healthy" else (
            f"{state.health}: {state.last_health_output or 'no output'}")
        evidence.expect(f"{state.name} health", shown, equals="healthy")
        if state.health != "healthy":
            evidence.note(f"{state.name} failing streak", state.failing_streak, unit="checks")
            evidence.note(f"{state.name} last health-check exit code", state.last_health_exit)
            evidence.note(f"{state.name} last health-check output", state.last_health_output)
    if checked == 0 and evidence.verdict is Verdict.PASS and docker_healthcheck.health is None:
        pytest.skip(f"{docker_healthcheck.name}: no HEALTHCHECK to evaluate; declare "
                    "`health: none` for it in the environment to not collect this check")


@pytest.mark.daily
def test_restart_count(docker: DockerClient, docker_container: DeclaredContainer,
                       docker_containers_found: ContainersFound, evidence: EvidenceLog) -> None:
    """A declared container has not been restarted by its restart policy too often.

    ``max_restarts`` on the container wins over the ``docker.restart_count`` threshold.
    """
    for state in _found(docker, docker_container, docker_containers_found, evidence):
        if docker_container.max_restarts is not None:
            evidence.expect(f"{state.name} restarts", state.restart_count,
                            at_most=docker_container.max_restarts, unit="restarts",
                            source=evidence.source_of("targets", docker.name, "containers",
                                                      docker_container.name, "max_restarts"))
        else:
            evidence.within("docker.restart_count", state.restart_count, unit="restarts",
                            default=Threshold(warn=0, crit=3))
        evidence.note(f"{state.name} state", state.status)
        if state.restart_count:
            evidence.note(f"{state.name} last exit code", state.exit_code)
            evidence.note(f"{state.name} last exit at", state.finished_at)
