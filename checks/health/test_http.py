"""HTTP health: the runbooks' ``curl -f /health`` and response-time expectations."""

import pytest

from opsverify.evidence import EvidenceLog
from opsverify.stats import percentile
from opsverify.targets.http import MISSING, HealthProbe, HttpClient, LatencyProbe, json_path
from opsverify.thresholds import Threshold


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_health(http: HttpClient, http_health: HealthProbe, evidence: EvidenceLog) -> None:
    """The health endpoint answers with the declared status and JSON values."""
    response = http.get(http_health.path)
    evidence.note(f"GET {http_health.path} response time", response.elapsed_ms, unit="ms")
    evidence.expect(f"GET {http_health.path} status", response.status,
                    equals=http_health.expect_status)
    if not http_health.expect_json:
        return
    document = response.json()
    evidence.expect(f"GET {http_health.path} body is JSON", document is not None, equals=True)
    for path, expected in http_health.expect_json.items():
        for concrete, actual in json_path(document, path):
            shown = "<missing>" if actual is MISSING else actual
            evidence.expect(f"{http_health.path} {concrete}", shown, equals=expected)


@pytest.mark.daily
def test_latency_p95(http: HttpClient, http_latency: LatencyProbe, evidence: EvidenceLog) -> None:
    """The p95 response time over N sequential requests stays under its threshold."""
    samples = [http.get(http_latency.path).elapsed_ms for _ in range(http_latency.samples)]
    evidence.note("samples", len(samples))
    evidence.note("max", max(samples), unit="ms")
    evidence.within("http.latency_p95_ms", percentile(samples, 95), unit="ms",
                    default=Threshold(warn=1000, crit=2000))
