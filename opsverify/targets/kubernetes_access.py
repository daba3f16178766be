"""How a kubernetes client reaches its API server: the kubeconfig it reads (and the tokens
it registers as secrets as it reads them), what its ``ApiClient`` may send, and what a
failure to reach the server means, in one line.

The guard is a subclass of the ``kubernetes`` package's ``ApiClient`` whose ``call_api`` (the
one method every typed API's request goes through) refuses anything but a GET or HEAD before
it is sent; a write-capable client's allowance admits exactly the two PATCHes of the
remediations (``remediation_write``), method, path and body.
"""

from __future__ import annotations

import email.utils
import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from opsverify.errors import WriteRefused
from opsverify.secrets import SECRETS
from opsverify.targets.kubernetes_model import RESTARTED_AT, one_line

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

READ_METHODS = frozenset({"GET", "HEAD"})
# The two writes a write-capable client sends, path and body (anything else is refused):
# rollout_restart's PATCH of the pod template's restartedAt annotation, scale's PATCH of
# the scale subresource.
DEPLOYMENT_PATH = re.compile(r"^/apis/apps/v1/namespaces/[a-z0-9-]+/deployments/[a-z0-9.-]+$")
SCALE_PATH = re.compile(r"^/apis/apps/v1/namespaces/[a-z0-9-]+/deployments/[a-z0-9.-]+/scale$")


def server_address(server: str) -> str:
    """``host:port`` of an API server URL (never its credentials or path)."""
    parts = urlsplit(server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}" if parts.hostname else server


@dataclass(frozen=True)
class KubeconfigView:
    """What the checks need of a kubeconfig's context: its server and namespace."""

    context: str
    server: str
    namespace: str | None


def read_kubeconfig(path: str, context: str | None) -> KubeconfigView:
    """The chosen (or current) context of the kubeconfig at ``path``; its users' tokens and
    passwords are registered as secrets as it is read. ``ValueError``: one line, why not."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ValueError(f"kubeconfig {path}: {exc.strerror or exc}") from None
    return _read_kubeconfig(path, context, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_kubeconfig(path: str, context: str | None, _mtime_ns: int) -> KubeconfigView:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"kubeconfig {path}: not readable YAML ({type(exc).__name__})") \
            from None
    if not isinstance(data, dict):
        raise ValueError(f"kubeconfig {path}: not a kubeconfig")
    for entry in data.get("users") or []:
        user = (entry or {}).get("user") or {}
        SECRETS.add_all(str(user[k]) for k in ("token", "password", "client-key-data")
                        if user.get(k))
    name = context or data.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or []
                if isinstance(c, dict)}
    if not name or name not in contexts:
        known = ", ".join(sorted(str(n) for n in contexts)) or "none"
        raise ValueError(f"kubeconfig {path}: no context {name!r}; contexts: {known}")
    chosen = contexts[name]
    clusters = {c.get("name"): c.get("cluster") or {} for c in data.get("clusters") or []
                if isinstance(c, dict)}
    server = str(clusters.get(chosen.get("cluster"), {}).get("server") or "")
    if not server:
        raise ValueError(f"kubeconfig {path}: context {name!r} names no cluster with a server")
    namespace = chosen.get("namespace")
    return KubeconfigView(str(name), server, str(namespace) if namespace else None)


def guarded_api_client(configuration: Any, *, writable: bool) -> ApiClient:
    """The ``kubernetes`` client's ``ApiClient`` for ``configuration``, refusing before it is
    sent every request but a GET (and, ``writable``, the PATCHes of the remediations)."""
    made = _guarded_class()(configuration)
    made.writable = writable
    made.writes = remediation_write if writable else no_write
    made.user_agent = f"opsverify ({'remediation' if writable else 'read-only'})"
    client: ApiClient = made
    return client


@functools.cache
def _guarded_class() -> Any:
    """The guarding subclass, defined on first use, when the package is imported."""
    from kubernetes.client import ApiClient

    class GuardedApiClient(ApiClient):
        """Reads (GET, HEAD: list and watch are GETs); a write only when ``writes``, the
        client's allowance, accepts its method, path and body."""

        writable = False
        writes: Callable[[str, str, Any], bool] = staticmethod(no_write)

        def call_api(self, method: str, url: str, header_params: Any = None, body: Any = None,
                     post_params: Any = None, _request_timeout: Any = None) -> Any:
            verb = str(method).upper()
            path = urlsplit(url).path
            if verb not in READ_METHODS and not self.writes(verb, path, body):
                raise WriteRefused(f"refusing Kubernetes API {verb} {path}: "
                                   + ("a remediation sends only its own PATCHes"
                                      if self.writable else
                                      "a non-destructive check is read-only (get, list, watch)"))
            return super().call_api(method, url, header_params, body, post_params,
                                    _request_timeout)

    return GuardedApiClient


def no_write(method: str, path: str, body: Any) -> bool:
    """The read-only client's allowance: no write at all."""
    return False


def remediation_write(method: str, path: str, body: Any) -> bool:
    """The PATCHes of rollout_restart and scale, exactly; nothing else."""
    if method != "PATCH" or not isinstance(body, dict):
        return False
    if DEPLOYMENT_PATH.match(path):
        annotations = ((body.get("spec") or {}).get("template") or {}).get("metadata") or {}
        return (body.keys() == {"spec"} and body["spec"].keys() == {"template"}
                and body["spec"]["template"].keys() == {"metadata"}
                and annotations.keys() == {"annotations"}
                and set(annotations["annotations"]) == {RESTARTED_AT})
    if SCALE_PATH.match(path):
        spec = body.get("spec")
        return (body.keys() == {"spec"} and isinstance(spec, dict) and spec.keys() == {"replicas"}
                and isinstance(spec["replicas"], int))
    return False


def register_tokens(configuration: Any) -> None:
    for value in (configuration.api_key or {}).values():
        SECRETS.add(str(value))
        SECRETS.add(str(value).split(" ", 1)[-1])  # "Bearer <token>": the token alone


# -- what a failure to reach the server means, in one line -----------------------------
def server_time(header: str | None) -> datetime:
    if header:
        try:
            return email.utils.parsedate_to_datetime(header).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


def rbac_grant(verb: str, resource: str, namespace: str) -> str:
    kind = resource.split("/", 1)[0]
    return (f"RBAC: {verb} on {resource} in namespace {namespace} (e.g. kubectl create role "
            f"opsverify-read --verb=get,list --resource={kind} -n {namespace}, bound to the "
            "checks' account)")


def api_cause(exc: Any, timeout_s: float) -> str:
    """``API server answered 401 Unauthorized: …`` from an ApiException."""
    if not exc.status:  # the client wraps a TLS failure as an ApiException of status 0
        return failure_cause(RuntimeError(str(exc.reason or "")), timeout_s)
    message = ""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (TypeError, ValueError, AttributeError):
        message = ""
    status = f"{exc.status} {exc.reason}".strip() if exc.reason else str(exc.status)
    if exc.status == 401:
        return f"API server answered {status}: the credentials were refused"
    return f"API server answered {status}" + (f": {one_line(message)}" if message else "")


def failure_cause(exc: BaseException, timeout_s: float) -> str:
    """Why the API server could not be asked, in one line, without urllib3's wrapping."""
    text = f"{type(exc).__name__}: {exc}"
    for needle, cause in (
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted (the kubeconfig's CA?)"),
        ("SSLError", "TLS handshake failed"),
        ("Connection refused", "connection refused"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "the server closed the connection without answering"),
        ("Name or service not known", "DNS: the API server's name does not resolve"),
        ("nodename nor servname", "DNS: the API server's name does not resolve"),
        ("timed out", f"no answer within {timeout_s:g} s"),
        ("Timeout", f"no answer within {timeout_s:g} s"),
    ):
        if needle in text:
            return cause
    return one_line(SECRETS.scrub(str(exc)), 300) or type(exc).__name__
