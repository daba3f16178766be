"""Kubernetes backup jobs: the TekuToko runbook's daily ``tekutoko-db-backup`` CronJob.

Each declared CronJob is not suspended and its last successful run
(``status.lastSuccessfulTime``) is at most ``max_age_hours`` old (default 26: a daily job
and two hours of slack). A job that never succeeded fails. This proves the job reports
success; what it wrote is a ``backup`` target's to check (presence, checksum, restore).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.targets.kubernetes_model import show_time

if TYPE_CHECKING:
    from opsverify.targets.kubernetes import DeclaredCronJob, KubernetesClient
    from opsverify.targets.kubernetes_model import CronJobState, Found


@probe
def kubernetes_cronjob_found(kubernetes: KubernetesClient,
                             kubernetes_cronjob: DeclaredCronJob) -> Found[CronJobState]:
    return kubernetes.cronjob(kubernetes_cronjob.ref)


@pytest.mark.daily
def test_cronjob_last_success_recent(kubernetes: KubernetesClient,
                                     kubernetes_cronjob: DeclaredCronJob,
                                     kubernetes_cronjob_found: Found[CronJobState],
                                     evidence: EvidenceLog) -> None:
    """A declared CronJob runs on schedule and last succeeded within ``max_age_hours``."""
    found = kubernetes_cronjob_found
    ref = found.ref
    declared = ("targets", kubernetes.name, "cronjobs", kubernetes_cronjob.ref.label)
    evidence.expect(f"cronjobs named {ref.name!r} in namespace {ref.namespace}",
                    0 if found.state is None else 1, at_least=1,
                    source=evidence.source_of(*declared[:3]))
    job = found.state
    if job is None:
        evidence.note(f"cronjobs in namespace {ref.namespace}",
                      ", ".join(found.others[:20]) or "none")
        return
    evidence.note(f"{job.name} schedule", job.schedule)
    # A suspended CronJob starts no job: its backups stop, whatever the last one did.
    evidence.expect(f"{job.name} spec.suspend", job.suspended, equals=False)
    evidence.note(f"{job.name} lastScheduleTime", show_time(job.last_schedule))
    if job.active:
        evidence.note(f"{job.name} running now", ", ".join(job.active))
    limit = kubernetes_cronjob.max_age_hours
    written = "max_age_hours" in kubernetes.spec.cronjobs[ref.label].model_fields_set
    source = evidence.source_of(*declared, "max_age_hours") if written else "check default"
    if job.last_success is None:
        evidence.expect(f"{job.name} lastSuccessfulTime", "never", equals=f"within {limit:g} h",
                        source=source)
        evidence.note(f"{job.name} created", show_time(job.created))
        return
    evidence.note(f"{job.name} lastSuccessfulTime", show_time(job.last_success))
    age = (found.now - job.last_success).total_seconds() / 3600
    evidence.expect(f"{job.name} last success age", round(max(0.0, age), 2), at_most=limit,
                    unit="h", source=source)
