"""HTTP fixes, each enabled per target under ``remediation:`` in its section:

    remediation:
      clear_cache: {path: /performance/cache/clear}

The one non-GET request opsverify ever sends: the declared POST, from a write-capable
:class:`~opsverify.targets.http.HttpWriteClient` (its POST-only session accepts only the
declared paths) that exists only inside an allowed destructive check (``http_admin``).
Whether the cache needs clearing, and whether clearing it worked, is what the target's
declared health GETs say (ERPFTS's ``/health/detailed``: ``components.cache.status``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from opsverify.remediation import Item
from opsverify.targets.base import Section

if TYPE_CHECKING:
    from opsverify.targets.http import HealthProbe, HttpResponse, HttpWriteClient

CONTEXT_FIELDS = 6  # fields of a failing component shown beside it
BODY_CHARS = 120


class ClearCacheSettings(Section):
    # The declared POST that clears the cache, a path on the target.
    path: str = Field(pattern=r"^/")


class HttpRemediation(Section):
    """``remediation:`` of an http target: an action runs only where it is listed."""

    clear_cache: ClearCacheSettings | None = None

    def posts(self) -> frozenset[str]:
        """The paths a write-capable client may POST to: the declared ones, nothing else."""
        return frozenset({self.clear_cache.path} if self.clear_cache else ())


@dataclass(frozen=True)
class Failure:
    """One expectation of a declared health GET that its answer does not meet."""

    what: str  # "GET /health/detailed status", "/health/detailed components.cache.status"
    shown: str  # "503 (expected 200)"
    context: str = ""  # the failing component's other fields: "entries 12, ttl_s 3600"

    def describe(self) -> str:
        return f"{self.what} = {self.shown}" + (f" [{self.context}]" if self.context else "")


def health_failures(probe: HealthProbe, response: HttpResponse) -> list[Failure]:
    """What test_health would FAIL in ``response`` to ``probe``: the status, a body that is
    not JSON, each expected JSON value; each with the failing object's other fields."""
    from opsverify.targets.http import MISSING, json_path

    found = []
    if response.status != probe.expect_status:
        found.append(Failure(f"GET {probe.path} status",
                             f"{response.status} (expected {probe.expect_status})"))
    if not probe.expect_json:
        return found
    document = response.json()
    if document is None:
        return [*found, Failure(f"GET {probe.path} body is JSON", "False (expected True)")]
    for path, value in probe.expect_json.items():
        for concrete, actual in json_path(document, path):
            if actual == value:
                continue
            shown = "<missing>" if actual is MISSING else repr(actual)
            found.append(Failure(f"{probe.path} {concrete}", f"{shown} (expected {value!r})",
                                 _context(document, concrete)))
    return found


def _context(document: Any, concrete: str) -> str:
    """The scalar fields beside a failing value (``components.cache.status`` → the rest of
    ``components.cache``): what the component says of itself."""
    from opsverify.targets.http import json_path

    parent = concrete.replace("[", ".").replace("]", "").rpartition(".")[0]
    if not parent:
        return ""
    [(_, node)] = json_path(document, parent)
    if not isinstance(node, dict):
        return ""
    last = concrete.rpartition(".")[2]
    fields = [f"{k} {v}" for k, v in node.items()
              if k != last and isinstance(v, str | int | float | bool)]
    return ", ".join(fields[:CONTEXT_FIELDS])


class ClearCache:
    """ERPFTS's "キャッシュクリア": ``POST /performance/cache/clear``, planned only while the
    target's declared health GETs fail, verified by them passing again after it."""

    name: ClassVar[str] = "clear_cache"

    def __init__(self, client: HttpWriteClient, settings: ClearCacheSettings) -> None:
        self.client = client
        self.target = client.name
        self.path = settings.path

    def failures(self) -> list[Failure]:
        """What the declared health GETs fail, as test_health judges them."""
        found: list[Failure] = []
        for probe in self.client.spec.health:
            found += health_failures(probe, self.client.get(probe.path))
        return found

    def select(self) -> list[Item]:
        failing = self.failures()
        if not failing:
            return []
        return [Item(identity=f"POST {self.client.shown(self.path)}",
                     before="; ".join(f.describe() for f in failing),
                     ref=tuple(f.what for f in failing))]

    def drift(self, item: Item) -> str | None:
        now = self.failures()
        if not now:
            return "the declared health passes again: nothing to clear"
        if tuple(f.what for f in now) != item.ref:
            return "the declared health fails otherwise now: " + "; ".join(
                f.describe() for f in now)
        return None

    def apply(self, item: Item) -> str:
        response = self.client.post(self.path)
        body = " ".join(response.text().split())[:BODY_CHARS]
        if not 200 <= response.status < 300:
            raise RuntimeError(f"POST {self.client.shown(self.path)} answered "
                               f"{response.status}: {body or 'no body'}")
        # A 200 says the request arrived; success is the health that asked for it passing.
        left = self.failures()
        if left:
            raise RuntimeError(f"POST answered {response.status} ({body}), but the declared "
                               "health still fails: " + "; ".join(f.describe() for f in left))
        checked = ", ".join(f"GET {p.path} {p.expect_status}" for p in self.client.spec.health)
        return f"POST answered {response.status} ({body}); declared health passes ({checked})"
