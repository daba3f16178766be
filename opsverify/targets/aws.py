"""AWS targets: the ``aws`` section (ECS, ALB, CloudWatch alarms and Logs) and read-only
API clients.

What every AWS-API target shares (``s3`` uses it too) lives here as well: the credential
keys, a botocore configuration with connect and read deadlines and a single attempt (no
retries that multiply the deadline), a guard that refuses every operation but
Describe/List/Get/Filter/Head before it is sent, a watchdog that bounds the whole
operation, and the translation of botocore errors into one-line
:class:`~opsverify.errors.TargetUnavailable`.

boto3 and botocore are imported when a client is built: a run without an AWS-API target
never loads them (the schemas above are needed by every run, the SDK is not).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.targets.base import Deadline, DeadlinePassed, Section, TargetSpec, run_within
from opsverify.targets.http import http_url

if TYPE_CHECKING:
    import botocore.exceptions
    from botocore.config import Config

# Operation names a read-only client may send: they read, they never change anything.
READ_PREFIXES = ("Describe", "List", "Get", "Filter", "Head")
# Answers that mean "these credentials cannot be used here": the check cannot be evaluated.
AUTH_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "UnrecognizedClientException",
    "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "AuthFailure",
    "InvalidSignatureException", "AccessDenied", "AccessDeniedException",
    "UnauthorizedOperation", "MissingAuthenticationToken", "IncompleteSignature",
})
THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
    "SlowDown",
})
REASON_CHARS = 160
USER_AGENT = "opsverify/0.1"


class AwsTargetSpec(TargetSpec):
    """Keys of every target reached through an AWS API: region, endpoint, credentials.

    Without ``access_key_id``/``secret_access_key`` the default AWS chain applies
    (``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``, then instance or task roles).
    """

    region: str = Field(pattern=r"^[a-z0-9-]+$")
    # An S3-compatible or AWS-compatible endpoint (MinIO, moto, LocalStack); AWS if absent.
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)

    @model_validator(mode="after")
    def _key_pair(self) -> AwsTargetSpec:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give access_key_id and secret_access_key together, or neither "
                             "(to use the default AWS credential chain)")
        return self

    def endpoint_address(self) -> str | None:
        """``host:port`` of the endpoint override, if any."""
        if self.endpoint_url is None:
            return None
        parts = urlsplit(self.endpoint_url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    def secrets(self) -> list[str]:
        return [v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v]


class EcsSection(Section):
    """ECS services whose running task count must equal their desired count."""

    cluster: str = Field(min_length=1)
    services: list[str] = Field(min_length=1)


class AlarmsSection(Section):
    """CloudWatch alarms in scope (by name prefix) and those allowed to be in ALARM."""

    prefix: str = ""
    # Names or shell-style patterns of alarms known to fire, accepted for now.
    allowed: list[str] = Field(default_factory=list)

    def allows(self, alarm: str) -> bool:
        return any(fnmatchcase(alarm, pattern) for pattern in self.allowed)

    def scope(self) -> str:
        return f"{self.prefix}*" if self.prefix else "all-alarms"


class LogGroupCheck(Section):
    """Events matching ``pattern`` in a log group over a window, judged by ``aws.log_errors``."""

    name: str = Field(min_length=1)
    pattern: str = "ERROR"  # a CloudWatch Logs filter pattern
    window_minutes: int = Field(default=1440, gt=0, le=43200)
    # Counting stops here; a capped count is reported as such.
    max_events: int = Field(default=1000, ge=1, le=100000)


class AwsTarget(AwsTargetSpec):
    type: Literal["aws"]
    ecs: EcsSection | None = None
    alb_target_groups: list[str] = Field(default_factory=list)  # names or ARNs
    alarms: AlarmsSection | None = None
    log_groups: list[LogGroupCheck] = Field(default_factory=list)

    def address(self) -> str:
        return self.endpoint_address() or f"{self.region}.amazonaws.com"


# -- results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """An API answer, or the error code of an answer the caller chose to handle."""

    data: dict[str, Any]
    error: str = ""
    message: str = ""
    status: int = 200


@dataclass(frozen=True)
class EcsService:
    cluster: str
    name: str
    status: str  # ACTIVE, DRAINING, INACTIVE; MISSING or ClusterNotFound when absent
    desired: int = 0
    running: int = 0
    pending: int = 0
    task_definition: str = ""
    rollout: str = ""

    @property
    def found(self) -> bool:
        return self.status in ("ACTIVE", "DRAINING", "INACTIVE")


@dataclass(frozen=True)
class TargetState:
    target: str  # id:port
    state: str
    reason: str = ""
    description: str = ""

    def describe(self) -> str:
        why = ": ".join(p for p in (self.reason, self.description) if p)
        return f"{self.target} {self.state}" + (f" ({why})" if why else "")


@dataclass(frozen=True)
class TargetGroupHealth:
    group: str
    found: bool
    arn: str = ""
    targets: tuple[TargetState, ...] = ()


@dataclass(frozen=True)
class Alarm:
    name: str
    state: str  # OK, ALARM, INSUFFICIENT_DATA
    reason: str = ""


@dataclass(frozen=True)
class LogCount:
    group: str
    found: bool
    count: int = 0
    capped: bool = False
    samples: tuple[str, ...] = ()


# -- the shared machinery ----------------------------------------------------------------
def boto_config(timeout_s: float, **extra: Any) -> Config:
    """Connect and read deadlines, one attempt: a hung endpoint costs one deadline."""
    from botocore.config import Config

    return Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra=USER_AGENT,
        **extra,
    )


def refuse_writes(model: Any, **_: Any) -> None:
    """botocore ``before-parameter-build`` hook: nothing but reads leaves the client."""
    operation = str(model.name)
    if not operation.startswith(READ_PREFIXES):
        raise WriteRefused(
            f"refusing AWS {operation} from a non-destructive check "
            f"(read-only: {', '.join(p + '*' for p in READ_PREFIXES)})"
        )


class AwsApi:
    """boto3 clients for one target, each call bounded by a deadline and mapped to
    :class:`TargetUnavailable` when the target cannot answer.

    Used from several threads at once: boto3 clients are thread-safe, its sessions are
    not, so clients are made from the session one at a time (``self._lock``).
    """

    def __init__(self, name: str, spec: AwsTargetSpec, timeout_s: float, *,
                 writable: bool = False, where: str = "aws", **config: Any) -> None:
        import boto3.session

        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.writable = writable
        self.where = where
        self._config = boto_config(timeout_s, **config)
        self._session = boto3.session.Session(
            aws_access_key_id=spec.access_key_id,
            aws_secret_access_key=spec.secret_access_key,
            aws_session_token=spec.session_token,
            region_name=spec.region,
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        """The boto3 client for ``service``; read-only unless this API was built writable."""
        with self._lock:
            if service not in self._clients:
                made = self._session.client(service, endpoint_url=self.spec.endpoint_url,
                                            config=self._config)
                if not self.writable:
                    made.meta.events.register("before-parameter-build", refuse_writes)
                self._clients[service] = made
            return self._clients[service]

    def call(self, service: str, method: str, *, handled: Iterable[str] = (),
             deadline: Deadline | None = None, **params: Any) -> Reply:
        """``client(service).<method>(**params)`` within the deadline (of the whole operation
        when given). Error codes in ``handled`` come back in :attr:`Reply.error`; anything
        else that prevents an answer raises :class:`TargetUnavailable`."""
        import botocore.exceptions

        fn = getattr(self.client(service), method)
        deadline = deadline or Deadline.start(self.timeout_s)
        late = f"{_operation(method)}: no complete answer within {self.timeout_s:g} s"
        if deadline.expired():
            raise self.unavailable(late)
        try:
            # Some grace over the socket deadlines, so that their more precise message wins
            # a tie.
            data = run_within(lambda: fn(**params), deadline.remaining() + 0.5,
                              name="opsverify-aws-call")
        except DeadlinePassed:
            raise self.unavailable(late) from None
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in handled:
                return Reply({}, code, str(error.get("Message", "")), status)
            raise self.unavailable(_client_error_cause(_operation(method), code, status)
                                   ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self.unavailable(self._botocore_cause(exc)) from None
        return Reply(data)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.address(), cause)

    def address(self) -> str:
        endpoint = self.spec.endpoint_address()
        return f"{self.where} {self.spec.region}" + (f" via {endpoint}" if endpoint else "")

    def _botocore_cause(self, exc: botocore.exceptions.BotoCoreError) -> str:
        import botocore.exceptions

        if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
            return f"connect timed out after {self.timeout_s:g} s"
        if isinstance(exc, botocore.exceptions.ReadTimeoutError):
            return f"no answer within {self.timeout_s:g} s"
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            text = str(getattr(exc, "kwargs", {}).get("error", ""))
            return "cannot connect: " + ("connection refused" if "refused" in text.lower()
                                         else "endpoint unreachable")
        if isinstance(exc, botocore.exceptions.NoCredentialsError
                      | botocore.exceptions.PartialCredentialsError):
            return ("no credentials: set access_key_id and secret_access_key, or "
                    "AWS_ACCESS_KEY_ID/AWS_PROFILE")
        if isinstance(exc, botocore.exceptions.NoRegionError):
            return "no region"
        return type(exc).__name__


def _operation(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("_"))


def _client_error_cause(operation: str, code: str, status: int) -> str:
    if code in AUTH_CODES or status in (401, 403):
        return f"{operation} refused: {code or status} (check the credentials and permissions)"
    if code in THROTTLE_CODES or status == 429:
        return f"{operation} throttled: {code or status}"
    if status >= 500:
        return f"{operation} failed on the server: {code or status}"
    return f"{operation} failed: {code or status}"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


# -- the aws client ----------------------------------------------------------------------
class AwsClient:
    """Read-only views of ECS, ELBv2, CloudWatch and CloudWatch Logs for one ``aws`` target."""

    def __init__(self, name: str, spec: AwsTarget, timeout_s: float, *,
                 writable: bool = False) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.api = AwsApi(name, spec, timeout_s, writable=writable, where="aws")

    def account(self) -> str:
        """The account the credentials belong to (STS GetCallerIdentity needs no
        permission): proves the endpoint answers and the credentials are accepted."""
        reply = self.api.call("sts", "get_caller_identity")
        return str(reply.data.get("Account", ""))

    def ecs_service(self, cluster: str, service: str) -> EcsService:
        reply = self.api.call("ecs", "describe_services", cluster=cluster, services=[service],
                              handled=("ClusterNotFoundException",))
        if reply.error:
            return EcsService(cluster, service, "ClusterNotFound")
        found = reply.data.get("services", [])
        if not found:
            failures = reply.data.get("failures", [])
            reason = str(failures[0].get("reason", "MISSING")) if failures else "MISSING"
            return EcsService(cluster, service, reason)
        svc = found[0]
        primary: dict[str, Any] = next(
            (d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY"), {})
        return EcsService(
            cluster, service, str(svc.get("status", "")),
            desired=int(svc.get("desiredCount", 0)),
            running=int(svc.get("runningCount", 0)),
            pending=int(svc.get("pendingCount", 0)),
            task_definition=str(svc.get("taskDefinition", "")).rsplit("/", 1)[-1],
            rollout=str(primary.get("rolloutState", "")),
        )

    def target_health(self, group: str) -> TargetGroupHealth:
        """Health of every target registered in a target group given by name or ARN."""
        deadline = Deadline.start(self.timeout_s)
        if group.startswith("arn:"):
            arn = group
        else:
            reply = self.api.call("elbv2", "describe_target_groups", Names=[group],
                                  handled=("TargetGroupNotFound",), deadline=deadline)
            groups = reply.data.get("TargetGroups", [])
            if reply.error or not groups:
                return TargetGroupHealth(group, found=False)
            arn = str(groups[0]["TargetGroupArn"])
        reply = self.api.call("elbv2", "describe_target_health", TargetGroupArn=arn,
                              handled=("TargetGroupNotFound",), deadline=deadline)
        if reply.error:
            return TargetGroupHealth(group, found=False, arn=arn)
        states = []
        for desc in reply.data.get("TargetHealthDescriptions", []):
            target, health = desc.get("Target", {}), desc.get("TargetHealth", {})
            where = f"{target.get('Id')}:{target['Port']}" if "Port" in target else str(
                target.get("Id"))
            states.append(TargetState(where, str(health.get("State", "")),
                                      str(health.get("Reason", "")),
                                      _clip(str(health.get("Description", "")))))
        return TargetGroupHealth(group, found=True, arn=arn, targets=tuple(states))

    def alarms(self, prefix: str = "", limit: int = 1000) -> tuple[list[Alarm], bool]:
        """Metric and composite alarms whose name starts with ``prefix`` (at most ``limit``;
        the flag says whether more exist), read page by page within one deadline."""
        deadline = Deadline.start(self.timeout_s)
        found: list[Alarm] = []
        params: dict[str, Any] = {"AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
                                  "MaxRecords": 100}
        if prefix:
            params["AlarmNamePrefix"] = prefix
        while True:
            data = self.api.call("cloudwatch", "describe_alarms", deadline=deadline,
                                 **params).data
            for alarm in [*data.get("MetricAlarms", []), *data.get("CompositeAlarms", [])]:
                found.append(Alarm(str(alarm["AlarmName"]), str(alarm.get("StateValue", "")),
                                   _clip(str(alarm.get("StateReason", "")))))
            token = data.get("NextToken")
            if len(found) >= limit:
                return found[:limit], bool(token) or len(found) > limit
            if not token:
                return found, False
            params["NextToken"] = token

    def count_log_events(self, check: LogGroupCheck, samples: int = 3) -> LogCount:
        """Events matching ``check.pattern`` over the last ``check.window_minutes``, counted
        page by page up to ``check.max_events``, all within one deadline."""
        deadline = Deadline.start(self.timeout_s)
        end = int(time.time() * 1000)
        params: dict[str, Any] = {
            "logGroupName": check.name, "filterPattern": check.pattern,
            "startTime": end - check.window_minutes * 60_000, "endTime": end,
        }
        count, kept = 0, list[str]()
        while True:
            params["limit"] = min(10_000, check.max_events - count)
            reply = self.api.call("logs", "filter_log_events", deadline=deadline,
                                  handled=("ResourceNotFoundException",), **params)
            if reply.error:
                return LogCount(check.name, found=False)
            events = reply.data.get("events", [])
            count += len(events)
            kept += [_clip(str(e.get("message", ""))) for e in events[: samples - len(kept)]]
            token = reply.data.get("nextToken")
            if count >= check.max_events:
                return LogCount(check.name, True, count, capped=bool(token), samples=tuple(kept))
            if not token:
                return LogCount(check.name, True, count, False, tuple(kept))
            params["nextToken"] = token

    def close(self) -> None:
        self.api.close()
