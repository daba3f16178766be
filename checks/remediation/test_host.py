"""Host remediation: the runbooks' fixes, each enabled per target (``remediation:``)."""

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.host import (
    DeleteOldFiles,
    DeleteOldFilesSettings,
    HostFiles,
    declared_under,
)
from opsverify.targets.host_capacity import path_size
from opsverify.thresholds import Threshold

GIB = 1024**3
PATH_BYTES = Threshold(warn=1 * GIB, crit=5 * GIB)  # test_path_size's, without max_bytes


@pytest.mark.destructive
def test_delete_old_files(host_admin: HostFiles, host_delete_old_files: DeleteOldFilesSettings,
                          remediation: Gate, evidence: EvidenceLog) -> None:
    """The runbook's ``find logs/ -mtime +7 -delete``: regular files under ``path`` matching
    ``pattern``, older than ``older_than_days``; then re-check what test_path_size judges
    of every declared path under that directory."""
    action = DeleteOldFiles(host_admin, host_delete_old_files)
    remediation.run(action, population=len(action.matching().files))
    spec = host_admin.spec
    for declared in declared_under(spec.paths, host_delete_old_files.path):
        where = evidence.source_of("targets", host_admin.name, "paths",
                                   spec.paths.index(declared))
        found = path_size(host_admin.client, declared.path)
        limits = declared.max_bytes is not None or declared.warn_bytes is not None
        evidence.within("host.path_bytes", found.total_bytes, unit="bytes",
                        default=Threshold(warn=declared.warn_bytes, crit=declared.max_bytes)
                        if limits else PATH_BYTES,
                        default_source=where if limits else "check default",
                        capacity=declared.max_bytes, item=declared.label)
