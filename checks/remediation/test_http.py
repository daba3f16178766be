"""HTTP remediation: the runbooks' fixes, each enabled per target (``remediation:``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.http import ClearCache, ClearCacheSettings
from opsverify.targets.http import MISSING, json_path

if TYPE_CHECKING:
    from opsverify.targets.http import HttpWriteClient


@pytest.mark.destructive
def test_clear_cache(http_admin: HttpWriteClient, http_clear_cache: ClearCacheSettings,
                     remediation: Gate, evidence: EvidenceLog) -> None:
    """POST the declared cache clear while the declared health GETs fail, then re-check what
    test_health judges of each of them."""
    remediation.run(ClearCache(http_admin, http_clear_cache))
    for declared in http_admin.spec.health:
        response = http_admin.get(declared.path)
        evidence.expect(f"GET {declared.path} status", response.status,
                        equals=declared.expect_status)
        if not declared.expect_json:
            continue
        document = response.json()
        evidence.expect(f"GET {declared.path} body is JSON", document is not None, equals=True)
        for path, value in declared.expect_json.items():
            for concrete, actual in json_path(document, path):
                shown = "<missing>" if actual is MISSING else actual
                evidence.expect(f"{declared.path} {concrete}", shown, equals=value)
