"""Backup remediation: the runbooks' fixes, each enabled per target (``remediation:``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.backup import Retention, RetentionSettings

if TYPE_CHECKING:
    from opsverify.backup.deleters import Deleter


@pytest.mark.destructive
def test_retention(backup_writer: Deleter, backup_retention: RetentionSettings,
                   remediation: Gate, evidence: EvidenceLog) -> None:
    """Delete the backups outside ``keep_last``/``keep_days`` (never the newest, never below
    ``keep_min``), each with its sidecar, then re-check what test_retention judges."""
    action = Retention(backup_writer, backup_retention)
    remediation.run(action, population=len(action.backups()))
    kept = action.backups()  # listed again, from the location
    spec = backup_writer.spec
    evidence.expect("backups kept", len(kept), at_least=spec.keep_min,
                    source=evidence.source_of("targets", backup_writer.name, "keep_min"))
    if spec.keep_max is not None:
        evidence.expect("backups kept", len(kept), at_most=spec.keep_max,
                        source=evidence.source_of("targets", backup_writer.name, "keep_max"))
    if kept:
        evidence.note("oldest backup", kept[-1].file.name)
