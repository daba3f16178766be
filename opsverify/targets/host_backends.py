"""testinfra's backends under a whole-command deadline (local, ssh, ``docker exec``), and
the docker CLI's failures said in one line.

Split from :mod:`opsverify.targets.host`, whose client builds and reads through these.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from typing import Any

from testinfra.backend.docker import DockerBackend
from testinfra.backend.local import LocalBackend

from opsverify.errors import TargetUnavailable
from opsverify.targets.ssh import BoundedSshBackend, kill_group, last_line


class Deadlines:
    """Mixed into testinfra's backends: a whole-operation deadline on every command.

    testinfra runs commands through ``subprocess.Popen(...).communicate()`` without a
    timeout; this replaces that one method and leaves the rest of testinfra as it is.
    """

    target = ""
    where = ""
    deadline_s = 0.0
    env: dict[str, str] | None = None  # the command's environment (the client sets it)

    def run_local(self, command: str, *args: str) -> Any:
        line = self.quote(command, *args)  # type: ignore[attr-defined]
        started = time.monotonic()
        proc = subprocess.Popen(  # noqa: S602 - testinfra builds the line with shlex.quote
            line, shell=True, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # so that a deadline ends the whole command, children too
        )
        try:
            stdout, stderr = proc.communicate(timeout=self.deadline_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise TargetUnavailable(
                self.target, self.where,
                f"no answer within {self.deadline_s:g} s ({short(line)})") from None
        result = self.result(proc.returncode, line.encode(), stdout, stderr)  # type: ignore[attr-defined]
        result.elapsed_s = time.monotonic() - started
        return result


class Local(Deadlines, LocalBackend):  # type: ignore[misc]  # testinfra is untyped
    NAME = "local"


class Ssh(Deadlines, BoundedSshBackend):
    """The ssh backend (see :mod:`opsverify.targets.ssh`) under the same deadline."""


class Docker(Deadlines, DockerBackend):  # type: ignore[misc]  # testinfra is untyped
    """testinfra's ``docker exec`` backend under the same deadline; in the container the
    command also runs under ``timeout`` where the image has one (busybox and coreutils do),
    since ending the local ``docker exec`` does not end what it started."""

    NAME = "docker"
    remote_timeout_s = 1

    def get_command(self, command: str, *args: str) -> str:
        inner = shlex.quote(super().get_command(command, *args))
        limit = self.remote_timeout_s
        return (f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 1 {limit} "
                f"/bin/sh -c {inner}; else exec /bin/sh -c {inner}; fi")

    def run(self, command: str, *args: str, **kwargs: Any) -> Any:
        out = super().run(command, *args, **kwargs)
        if out.rc != 0 and docker_failed(out.stderr):
            raise TargetUnavailable(self.target, self.where, docker_cause(out.stderr, self.name))
        return out


# -- the docker CLI's messages, in one line -------------------------------------------------
DOCKER_ERRORS = ("Error response from daemon", "Cannot connect to the Docker daemon",
                  "error during connect", "OCI runtime exec failed", "docker: not found",
                  "docker: command not found", "Error: No such container")


def docker_failed(stderr: str) -> bool:
    """Whether the docker CLI (not the command in the container) failed."""
    return any(marker in stderr for marker in DOCKER_ERRORS)


def docker_cause(stderr: str, container: str) -> str:
    """What went wrong with ``docker exec``, said for an operator."""
    if "is not running" in stderr or "is paused" in stderr:
        state = "paused" if "is paused" in stderr else "not running"
        return f"container {container} is {state} (docker exec needs a running container)"
    if "No such container" in stderr:
        return f"no such container {container} on the engine"
    if "Cannot connect to the Docker daemon" in stderr or "error during connect" in stderr:
        return "cannot connect to the Docker engine (is dockerd running? check docker_host)"
    if "docker: not found" in stderr or "docker: command not found" in stderr:
        return "the docker CLI is not installed here (apt-get install docker.io)"
    if "OCI runtime exec failed" in stderr:
        return ("cannot run /bin/sh in the container (docker exec: "
                f"{short(last_line(stderr).split('exec failed:', 1)[-1].strip(), 100)})")
    return short(last_line(stderr).removeprefix("Error response from daemon: "), 160)


# -- helpers ----------------------------------------------------------------------------
def short(command: str, limit: int = 60) -> str:
    command = " ".join(command.split())
    return command if len(command) <= limit else command[: limit - 1] + "…"
