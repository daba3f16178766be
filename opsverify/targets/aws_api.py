"""What every target reached through an AWS API shares (``aws`` and ``s3``): the credential
keys, a botocore configuration with connect and read deadlines and a single attempt (no
retries that multiply the deadline), a guard that refuses every operation but
Describe/List/Get/Filter/Head before it is sent (or, for a remediation's client, all but
its allow-list), a watchdog that bounds the whole operation, and the translation of botocore
errors into one-line :class:`~opsverify.errors.TargetUnavailable`.

Split from :mod:`opsverify.targets.aws`, which makes the ``aws`` type's reads. boto3 and
botocore are imported when a client is built: a run without an AWS-API target never loads
them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from opsverify.errors import MissingPrivilege, TargetUnavailable, WriteRefused
from opsverify.targets.base import Deadline, DeadlinePassed, TargetSpec, run_within
from opsverify.targets.http import http_url

if TYPE_CHECKING:
    import botocore.exceptions
    from botocore.config import Config

# Operation names a read-only client may send: they read, they never change anything.
READ_PREFIXES = ("Describe", "List", "Get", "Filter", "Head")
NEVER_SENT = frozenset({"GetSecretValue", "BatchGetSecretValue"})
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
# Answers that mean "this account may not read that": a SKIP naming the grant, not a FAIL.
# A bare "403" is a 403 whose body botocore could not parse (moto answers JSON services with
# an XML AccessDenied); bad credentials already failed the target's gate (GetCallerIdentity).
DENIED_CODES = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403")
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


@dataclass(frozen=True)
class Reply:
    """An API answer, or the error code of an answer the caller chose to handle."""

    data: dict[str, Any]
    error: str = ""
    message: str = ""
    status: int = 200



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


def allow_only(writes: frozenset[str]) -> Callable[..., None]:
    """A ``before-parameter-build`` hook: reads and ``writes`` leave the client, nothing else
    (and never a secret's value)."""

    def hook(model: Any, **_: Any) -> None:
        operation = str(model.name)
        if operation in NEVER_SENT:
            raise WriteRefused(f"refusing AWS {operation}: opsverify never reads a secret's value")
        if not (operation in writes or operation.startswith(READ_PREFIXES)):
            raise WriteRefused(f"refusing AWS {operation}: this client may send reads and "
                               f"{', '.join(sorted(writes))} only")

    return hook


class AwsApi:
    """boto3 clients for one target, each call bounded by a deadline and mapped to
    :class:`TargetUnavailable` when the target cannot answer.

    Used from several threads at once: boto3 clients are thread-safe, its sessions are
    not, so clients are made from the session one at a time (``self._lock``).
    """

    def __init__(self, name: str, spec: AwsTargetSpec, timeout_s: float, *,
                 writable: bool = False, writes: Iterable[str] = (), where: str = "aws",
                 **config: Any) -> None:
        import boto3.session

        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.writable = writable
        # Not writable, but these operations besides reads (a remediation's allow-list).
        self.writes = frozenset(writes)
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
        """The boto3 client for ``service``; read-only unless this API was built writable
        (or with ``writes``, which it may send besides reads)."""
        with self._lock:
            if service not in self._clients:
                made = self._session.client(service, endpoint_url=self.spec.endpoint_url,
                                            config=self._config)
                if self.writes and not self.writable:
                    made.meta.events.register("before-parameter-build",
                                              allow_only(self.writes))
                elif not self.writable:
                    made.meta.events.register("before-parameter-build", refuse_writes)
                self._clients[service] = made
            return self._clients[service]

    def call(self, service: str, method: str, /, *, handled: Iterable[str] = (),
             deadline: Deadline | None = None, **params: Any) -> Reply:
        """``client(service).<method>(**params)`` within the deadline (of the whole operation
        when given). Error codes in ``handled`` come back in :attr:`Reply.error`; anything
        else that prevents an answer raises :class:`TargetUnavailable`. Positional-only
        ``service``: ECS's UpdateService takes a ``service`` parameter of its own."""
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

    def read(self, service: str, method: str, /, *, what: str, grant: str,
             handled: Iterable[str] = (), deadline: Deadline | None = None,
             **params: Any) -> Reply:
        """:meth:`call`, where an answer saying these credentials may not read ``what``
        raises :class:`MissingPrivilege` naming ``grant`` (a SKIP, not a FAIL)."""
        reply = self.call(service, method, handled=(*DENIED_CODES, *handled),
                          deadline=deadline, **params)
        if reply.error in DENIED_CODES:
            raise MissingPrivilege(self.name, what, grant)
        return reply

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


def clip(text: str) -> str:
    """``text`` on one line, at most ``REASON_CHARS`` long (an API's reason, a log line)."""
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"
