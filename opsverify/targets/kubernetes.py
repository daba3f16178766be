"""Kubernetes targets: the ``kubernetes`` section and a client that can only read the cluster.

The runbook's ``kubectl get``: declared Deployments are available and rolled out, the pods
of the target's namespaces do not crash-loop or restart too often, HPAs are not pinned at
their maximum, CronJobs (the daily backup) succeeded recently, no Warning event is recent;
and the security checks read every pod's containers (privileged, ``:latest``, limits).

The client is the official ``kubernetes`` Python client, authenticated from a kubeconfig
(its context, or the current one) or from the service account mounted in a pod. Its
``ApiClient`` is subclassed so that anything but a GET is refused before it is sent; the
write-capable client (remediation only, ``writable=True``) sends exactly the two PATCHes
its actions need and nothing else (``targets/kubernetes_access.py``: the kubeconfig and
that guard; ``targets/kubernetes_model.py``: what the reads return). Every call has
``(connect, read)`` timeouts from ``timeout_s`` and the whole answer is bounded by the same
deadline; urllib3's retries are off, so a hung API server costs one deadline. Every token
the kubeconfig (or the pod's token file) holds is registered as a secret the moment it is
read.

The ``kubernetes`` package (0.6 s to import) is imported when a client first talks to its
server: a run without a kubernetes target never loads it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from opsverify.errors import MissingPrivilege, TargetUnavailable, WriteRefused
from opsverify.remediation.kubernetes import KubernetesRemediation
from opsverify.secrets import SECRETS
from opsverify.targets.base import (
    DeadlinePassed,
    Section,
    TargetSpec,
    names_or_mapping,
    run_within,
)
from opsverify.targets.kubernetes_access import (
    api_cause,
    failure_cause,
    guarded_api_client,
    rbac_grant,
    read_kubeconfig,
    register_tokens,
    server_address,
    server_time,
)
from opsverify.targets.kubernetes_model import (
    RESTARTED_AT,
    CronJobState,
    DeploymentState,
    EventList,
    EventState,
    Found,
    HpaState,
    ObjectRef,
    PodList,
    PodState,
    one_line,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

T = TypeVar("T")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PAGE = 500  # items per list call; the continue token fetches the rest
NAME = re.compile(r"^(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class CronJobExpectation(Section):
    """``cronjobs: {tekutoko-db-backup: {max_age_hours: 26}}``: its last successful run is
    at most this old (the daily backup: a day and two hours of slack)."""

    max_age_hours: float = Field(default=26, gt=0)


class EventsSettings(Section):
    """``events:``: Warning events last seen within ``window_minutes`` FAIL the events
    check, except those whose reason is in ``ignore_reasons``."""

    window_minutes: float = Field(default=60, gt=0)
    ignore_reasons: list[str] = Field(default_factory=list)


class KubernetesSecurity(Section):
    """``security:`` of a kubernetes target: each check of
    ``checks/security/test_kubernetes.py`` applies to every pod of the target's namespaces;
    ``<check>: false`` opts the target out."""

    privileged: bool = True  # no privileged container (allowPrivilegeEscalation: a WARN)
    latest_tag: bool = True  # no image with :latest or no tag (a digest is fine)
    resource_limits: bool = True  # cpu and memory limits on every container


@dataclass(frozen=True)
class DeclaredCronJob:
    ref: ObjectRef
    max_age_hours: float


class KubernetesTarget(TargetSpec):
    type: Literal["kubernetes"]
    kubeconfig: str | None = None  # a path; or in_cluster: true
    context: str | None = None  # the kubeconfig's current-context when unset
    in_cluster: bool = False  # the service account's token and CA mounted in a pod
    # Where to look; default: the context's namespace (in a pod: the service account's),
    # else "default".
    namespaces: list[str] = Field(default_factory=list)
    deployments: list[str] = Field(default_factory=list)
    hpas: list[str] = Field(default_factory=list)
    cronjobs: dict[str, CronJobExpectation] = Field(default_factory=dict)
    events: EventsSettings = Field(default_factory=EventsSettings)
    security: KubernetesSecurity = Field(default_factory=KubernetesSecurity)
    # Fixes checks/remediation/ may apply here (each also needs -m destructive and
    # --allow-destructive naming the environment).
    remediation: KubernetesRemediation = Field(default_factory=KubernetesRemediation)

    # `cronjobs: [a, b]` declares names with the default max_age_hours.
    _list_or_mapping = field_validator("cronjobs", mode="before")(names_or_mapping)

    @field_validator("kubeconfig")
    @classmethod
    def _home(cls, value: str | None) -> str | None:
        # `~/.kube/config`, as kubectl takes it.
        return None if value is None else os.path.expanduser(value)

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if "/" in name or not NAME.match(name):
                raise ValueError(f"{name!r} is not a namespace name")
        return value

    @model_validator(mode="after")
    def _one_way_in_and_names(self) -> KubernetesTarget:
        if self.in_cluster == (self.kubeconfig is not None):
            raise ValueError("give kubeconfig: (a path) or in_cluster: true, not both "
                             "and not neither")
        if self.context is not None and self.in_cluster:
            raise ValueError("context: is a kubeconfig's; in_cluster: true has none")
        declared = [*self.deployments, *self.hpas, *self.cronjobs,
                    *self.remediation.declared_names()]
        for entry in declared:
            if not NAME.match(entry):
                raise ValueError(f"{entry!r} is not an object name (name, or namespace/name)")
            if "/" not in entry and len(self.namespaces) > 1:
                raise ValueError(f"{entry!r}: several namespaces are declared; write "
                                 f"namespace/name (e.g. {self.namespaces[0]}/{entry})")
        return self

    def address(self) -> str:
        if self.in_cluster:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            return f"{host}:{port}" if host else "in-cluster (no KUBERNETES_SERVICE_HOST)"
        assert self.kubeconfig is not None
        try:
            return server_address(read_kubeconfig(self.kubeconfig, self.context).server)
        except ValueError:
            return f"kubeconfig {self.kubeconfig}"

    def ref(self, entry: str) -> ObjectRef:
        """A declared name as an object: ``namespace/name``, or a name in the one declared
        namespace (namespace ``""`` when none is declared: the client resolves it to the
        context's)."""
        namespace, _, name = entry.rpartition("/")
        return ObjectRef(namespace or (self.namespaces[0] if self.namespaces else ""), name,
                         entry)


class KubernetesClient:
    """One Kubernetes API server, read with a deadline on every call.

    Used from several threads at once: one ``ApiClient`` (a urllib3 pool) serves concurrent
    requests; which one is current, made on first use and dropped when a call is abandoned,
    is guarded by ``self._lock``.
    """

    def __init__(self, name: str, spec: KubernetesTarget, timeout_s: float, *,
                 writable: bool = False) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        # writable: the PATCHes of rollout_restart and scale (remediation only).
        self.writable = writable
        self._api: ApiClient | None = None
        self._namespace: str | None = None
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------------------
    @property
    def api(self) -> ApiClient:
        with self._lock:
            if self._api is None:
                self._api = self._open()
            return self._api

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()  # type: ignore[no-untyped-call]  # the package leaves it unannotated

    def namespaces(self) -> tuple[str, ...]:
        """The namespaces the checks look in: declared, else the context's (in a pod, the
        service account's), else ``default``."""
        if self.spec.namespaces:
            return tuple(self.spec.namespaces)
        _ = self.api  # resolves the context's namespace
        return (self._namespace or "default",)

    def resolve(self, ref: ObjectRef) -> ObjectRef:
        """``ref`` with its namespace: a bare name declared without ``namespaces:`` is in
        the context's."""
        return ref if ref.namespace else ObjectRef(self.namespaces()[0], ref.name, ref.label)

    # -- reading ----------------------------------------------------------------------
    def ping(self) -> str:
        """``GET /version``: the server's gitVersion (the target's gate)."""
        from kubernetes.client import VersionApi

        api = VersionApi(self.api)
        data, _ = self._get("/version", lambda **kw: api.get_code(**kw))
        return str(data.get("gitVersion", "unknown"))

    def deployment(self, declared: ObjectRef) -> Found[DeploymentState]:
        from kubernetes.client import AppsV1Api

        ref = self.resolve(declared)
        apps = AppsV1Api(self.api)
        return self._found(ref, "deployments.apps", DeploymentState.parse,
                           lambda **kw: apps.read_namespaced_deployment(ref.name, ref.namespace,
                                                                        **kw),
                           lambda **kw: apps.list_namespaced_deployment(ref.namespace, **kw))

    def hpa(self, declared: ObjectRef) -> Found[HpaState]:
        from kubernetes.client import AutoscalingV1Api

        ref = self.resolve(declared)
        scaling = AutoscalingV1Api(self.api)
        return self._found(
            ref, "horizontalpodautoscalers.autoscaling", HpaState.parse,
            lambda **kw: scaling.read_namespaced_horizontal_pod_autoscaler(
                ref.name, ref.namespace, **kw),
            lambda **kw: scaling.list_namespaced_horizontal_pod_autoscaler(ref.namespace, **kw))

    def cronjob(self, declared: ObjectRef) -> Found[CronJobState]:
        from kubernetes.client import BatchV1Api

        ref = self.resolve(declared)
        batch = BatchV1Api(self.api)
        return self._found(ref, "cronjobs.batch", CronJobState.parse,
                           lambda **kw: batch.read_namespaced_cron_job(ref.name, ref.namespace,
                                                                       **kw),
                           lambda **kw: batch.list_namespaced_cron_job(ref.namespace, **kw))

    def pods(self, selector: str = "", namespace: str | None = None) -> PodList:
        """Every pod of the target's namespaces (or of ``namespace``, matching ``selector``)."""
        from kubernetes.client import CoreV1Api

        core = CoreV1Api(self.api)
        namespaces = (namespace,) if namespace else self.namespaces()
        found: list[PodState] = []
        for ns in namespaces:
            items, _ = self._list(
                f"pods in namespace {ns}", "pods", ns,
                lambda ns=ns, **kw: core.list_namespaced_pod(ns, label_selector=selector or None,
                                                             **kw))
            found += [PodState.parse(item) for item in items]
        return PodList(namespaces, tuple(sorted(found, key=lambda p: p.path)))

    def warning_events(self) -> EventList:
        """The ``core/v1`` Warning events of the target's namespaces, with the server's clock."""
        from kubernetes.client import CoreV1Api

        core = CoreV1Api(self.api)
        found: list[EventState] = []
        now = datetime.now(UTC)
        for ns in self.namespaces():
            items, now = self._list(
                f"events in namespace {ns}", "events", ns,
                lambda ns=ns, **kw: core.list_namespaced_event(ns, field_selector="type=Warning",
                                                               **kw))
            found += [EventState.parse(item) for item in items]
        return EventList(self.namespaces(), tuple(found), now)

    def deployment_state(self, ref: ObjectRef) -> DeploymentState | None:
        """One deployment as the server has it now (remediation: plan, drift, verify)."""
        return self.deployment(ref).state

    def scale_replicas(self, ref: ObjectRef) -> int | None:
        """``spec.replicas`` of a deployment's scale subresource; ``None``: no deployment."""
        from kubernetes.client import AppsV1Api

        ref = self.resolve(ref)
        apps = AppsV1Api(self.api)
        try:
            data, _ = self._get(f"the scale of deployment {ref.path}", lambda **kw:
                                apps.read_namespaced_deployment_scale(ref.name, ref.namespace,
                                                                      **kw),
                                resource="deployments.apps/scale", namespace=ref.namespace)
        except LookupError:
            return None
        return int((data.get("spec") or {}).get("replicas") or 0)

    # -- writing (remediation only) ------------------------------------------------------
    def restart_deployment(self, ref: ObjectRef, at: str) -> DeploymentState:
        """``kubectl rollout restart``: stamp the pod template with ``restartedAt``; the
        deployment as the server answered the PATCH."""
        from kubernetes.client import AppsV1Api

        self._require_writable("kubectl rollout restart")
        ref = self.resolve(ref)
        apps = AppsV1Api(self.api)
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}
        data = self._write(f"PATCH deployment {ref.path}", lambda **kw:
                           apps.patch_namespaced_deployment(ref.name, ref.namespace, body,
                                                            field_manager="opsverify", **kw))
        return DeploymentState.parse(data)

    def scale_deployment(self, ref: ObjectRef, replicas: int) -> int:
        """``kubectl scale``: PATCH the scale subresource; ``spec.replicas`` as answered."""
        from kubernetes.client import AppsV1Api

        self._require_writable("kubectl scale")
        ref = self.resolve(ref)
        apps = AppsV1Api(self.api)
        data = self._write(f"PATCH the scale of deployment {ref.path}", lambda **kw:
                           apps.patch_namespaced_deployment_scale(
                               ref.name, ref.namespace, {"spec": {"replicas": replicas}},
                               field_manager="opsverify", **kw))
        return int((data.get("spec") or {}).get("replicas") or 0)

    # -- internals --------------------------------------------------------------------
    def _open(self) -> ApiClient:
        try:
            configuration, namespace = self._configuration()
        except Exception as exc:  # noqa: BLE001 - a config that cannot load is one line
            raise self._unavailable(one_line(SECRETS.scrub(str(exc)), 300)) from None
        self._namespace = namespace
        return guarded_api_client(configuration, writable=self.writable)

    def _configuration(self) -> tuple[Any, str | None]:
        from kubernetes import config
        from kubernetes.client import Configuration

        # proxy="": a proxy of the process environment must not see (or redirect) traffic
        # to the API server; a kubeconfig's own proxy-url still applies.
        configuration = Configuration(proxy="")
        if self.spec.in_cluster:
            config.load_incluster_config(  # type: ignore[no-untyped-call]  # unannotated
                client_configuration=configuration)
            ns_file = SERVICE_ACCOUNT / "namespace"
            namespace = ns_file.read_text().strip() if ns_file.is_file() else None
        else:
            assert self.spec.kubeconfig is not None
            try:
                view = read_kubeconfig(self.spec.kubeconfig, self.spec.context)
            except ValueError as exc:
                raise RuntimeError(str(exc)) from None
            config.load_kube_config(  # type: ignore[no-untyped-call]  # unannotated
                config_file=self.spec.kubeconfig, context=view.context,
                client_configuration=configuration, persist_config=False)
            namespace = view.namespace
        # No retries that multiply the deadline; every call carries its own timeouts.
        configuration.retries = False
        register_tokens(configuration)
        hook = configuration.refresh_api_key_hook
        if hook is not None:  # an exec plugin or a rotated service-account token
            def refreshed(conf: Any) -> None:
                hook(conf)
                register_tokens(conf)
            configuration.refresh_api_key_hook = refreshed
        return configuration, namespace

    def _found(self, ref: ObjectRef, resource: str, parse: Callable[[dict[str, Any]], T],
               read: Callable[..., Any], listing: Callable[..., Any]) -> Found[T]:
        kind = resource.split(".", 1)[0][:-1]
        try:
            data, now = self._get(f"{kind} {ref.path}", read, resource=resource,
                                  namespace=ref.namespace)
        except LookupError:
            items, now = self._list(f"{resource} in namespace {ref.namespace}", resource,
                                    ref.namespace, listing)
            others = tuple(sorted(str((i.get("metadata") or {}).get("name")) for i in items))
            return Found(ref, None, others, now)
        return Found(ref, parse(data), (), now)

    def _list(self, what: str, resource: str, namespace: str,
              call: Callable[..., Any]) -> tuple[list[dict[str, Any]], datetime]:
        """Every item of a list call, a page at a time."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            data, now = self._get(what, functools.partial(call, limit=PAGE, _continue=token),
                                  resource=resource, namespace=namespace, verb="list")
            items += [i for i in data.get("items") or [] if isinstance(i, dict)]
            token = (data.get("metadata") or {}).get("continue") or None
            if not token:
                return items, now

    def _get(self, what: str, call: Callable[..., Any], *, resource: str = "",
             namespace: str = "", verb: str = "get") -> tuple[dict[str, Any], datetime]:
        """One GET: its JSON and the server's ``Date``. A 404 is ``LookupError``; a 403
        is :class:`MissingPrivilege` naming the RBAC grant; else ``TargetUnavailable``."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call(call)
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(what) from None
            if exc.status == 403 and resource:
                raise MissingPrivilege(self.name, what, rbac_grant(verb, resource, namespace)) \
                    from None
            raise self._unavailable(api_cause(exc, self.timeout_s)) from None

    def _write(self, what: str, call: Callable[..., Any]) -> dict[str, Any]:
        """One PATCH; the server's refusal is the item's failure (one line)."""
        from kubernetes.client.exceptions import ApiException

        try:
            data, _ = self._call(call)
        except ApiException as exc:
            raise RuntimeError(f"{what}: {api_cause(exc, self.timeout_s)}") from None
        except TargetUnavailable as exc:
            raise RuntimeError(f"{what}: {exc.cause}") from None
        return data

    def _call(self, call: Callable[..., Any]) -> tuple[dict[str, Any], datetime]:
        """Run one request with ``(connect, read)`` timeouts and the whole-answer deadline
        (a server that drips bytes cannot hold the run past it); read its JSON."""
        from kubernetes.client.exceptions import ApiException

        _ = self.api  # built here, not in the deadline's thread: a config error is its line
        timeout = (self.timeout_s, self.timeout_s)

        def request() -> tuple[dict[str, Any], datetime]:
            response = call(_preload_content=False, _request_timeout=timeout)
            try:
                body = response.data
            finally:
                response.release_conn()
            return json.loads(body or b"{}"), server_time(response.headers.get("Date"))

        try:
            return run_within(request, self.timeout_s, name=f"opsverify-kubernetes-{self.name}")
        except DeadlinePassed:
            self._abandon()
            raise self._unavailable(f"no answer within {self.timeout_s:g} s") from None
        except (ApiException, WriteRefused, TargetUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - every other failure is one line
            raise self._unavailable(failure_cause(exc, self.timeout_s)) from None

    def _require_writable(self, what: str) -> None:
        if not self.writable:
            raise WriteRefused(f"{self.name}: {what} from a read-only client")

    def _abandon(self) -> None:
        # The stuck request keeps its connection; later calls must not queue behind it.
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()  # type: ignore[no-untyped-call]  # the package leaves it unannotated

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, f"kubernetes {self.spec.address()}", cause)
