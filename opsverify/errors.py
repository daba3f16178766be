"""Exceptions that carry one readable line for the operator."""

from __future__ import annotations

from typing import Any


class OpsverifyError(Exception):
    """Base of every error opsverify reports as a single line."""


class EnvironmentFileError(OpsverifyError):
    """The environment file is missing, malformed or invalid (exit code 4)."""


class TargetUnavailable(OpsverifyError):
    """A target could not be evaluated: unreachable, timeout, auth, DNS.

    The message names the target and its address, never a secret.
    """

    def __init__(self, target: str, address: str, cause: str) -> None:
        self.target = target
        self.address = address
        self.cause = cause
        self.timing: object | None = None  # the probe that found it, when one did
        super().__init__(f"{target} ({address}): {cause}")

    def __reduce__(self) -> tuple[Any, ...]:  # from a probe process (probe_process.py)
        return type(self), (self.target, self.address, self.cause), self.__dict__


class WriteRefused(OpsverifyError):
    """A read-only client was asked to change something."""


class BlastRadiusExceeded(OpsverifyError):
    """A remediation would touch more than --max-actions items."""


class MissingPrivilege(OpsverifyError):
    """The check's account may not read what the check needs: a SKIP naming the least grant
    that fixes it, never a FAIL (the target may be fine; we cannot tell)."""

    def __init__(self, target: str, what: str, grant: str) -> None:
        self.target = target
        self.what = what
        self.grant = grant
        super().__init__(f"{target}: cannot read {what} without a privilege this account "
                         f"lacks; grant it: {grant}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.target, self.what, self.grant), self.__dict__
