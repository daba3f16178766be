"""Backup fixes, each enabled per target under ``remediation:`` in its section:

    remediation:
      retention: {keep_last: 7, keep_days: 6}

The runbooks' "delete backups older than 7 days", made safe: keep the newest ``keep_last``
and every backup within ``keep_days`` of the newest (of the newest, not of now: a nightly
job that stopped a week ago must not turn retention into "delete them all"), never the
newest, never fewer than the target's ``keep_min``. A backup's checksum sidecar goes with it.
The action takes a write-capable :class:`~opsverify.backup.deleters.Deleter`, which exists
only inside an allowed destructive check (``backup_writer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from opsverify.remediation import Item
from opsverify.targets.base import Section

if TYPE_CHECKING:
    from opsverify.backup.deleters import Deleter, Stored
    from opsverify.targets.backup import BackupTarget


class RetentionSettings(Section):
    # Both given, on purpose: an empty retention: {} must not mean "keep only the newest".
    keep_last: int = Field(ge=1)  # the newest this many are kept
    keep_days: float = Field(ge=0)  # ...and every backup this close to the newest


class BackupRemediation(Section):
    """``remediation:`` of a backup target: an action runs only where it is listed."""

    retention: RetentionSettings | None = None


@dataclass(frozen=True)
class Doomed:
    """What apply deletes for one item: the backup, and its sidecar if it has one."""

    backup: Stored
    sidecar: Stored | None


def backups(spec: BackupTarget, listed: Sequence[Stored]) -> list[Stored]:
    """The backups matching ``pattern`` (sidecars excluded), newest first: the order and
    the set test_retention counts."""
    found = [s for s in listed if fnmatchcase(s.file.name, spec.pattern)
             and not s.file.name.endswith(spec.sidecar_suffix)]
    return sorted(found, key=lambda s: (s.file.modified, s.file.name), reverse=True)


def to_delete(newest_first: Sequence[Stored], settings: RetentionSettings,
              keep_min: int) -> list[Stored]:
    """Everything but the newest ``keep_last``, those within ``keep_days`` of the newest,
    and (the floor) the newest ``keep_min``; never the newest."""
    if not newest_first:
        return []
    newest = newest_first[0].file.modified
    window = timedelta(days=settings.keep_days)
    kept = max(settings.keep_last, keep_min, 1)
    # Newest first, so what is kept is always a run from the newest down.
    while kept < len(newest_first) and newest - newest_first[kept].file.modified <= window:
        kept += 1
    return list(newest_first[kept:])


class Retention:
    """Delete the backups outside the retention policy, each with its checksum sidecar;
    each re-validated just before it goes (unchanged, and still outside the policy when
    the location is listed again)."""

    name: ClassVar[str] = "retention"

    def __init__(self, deleter: Deleter, settings: RetentionSettings) -> None:
        self.deleter = deleter
        self.spec = deleter.spec
        self.target = deleter.name
        self.settings = settings

    def backups(self) -> list[Stored]:
        """The backups as the location lists them now, newest first."""
        return backups(self.spec, self.deleter.files())

    def select(self) -> list[Item]:
        listed = self.deleter.files()
        found = backups(self.spec, listed)
        names = {s.file.name for s in listed}
        items = []
        now = datetime.now(UTC)
        # Oldest first: an action stopped part-way leaves the newer backups.
        for old in reversed(to_delete(found, self.settings, self.spec.keep_min)):
            # Identified as the location states it now (S3: with its version).
            backup = self.deleter.stat(old.file.name)
            if backup is None:
                continue  # gone while we listed: nothing to plan
            sidecar_name = backup.file.name + self.spec.sidecar_suffix
            sidecar = self.deleter.stat(sidecar_name) if sidecar_name in names else None
            items.append(self._item(Doomed(backup, sidecar), found[0], now))
        return items

    def drift(self, item: Item) -> str | None:
        doomed: Doomed = item.ref
        name = doomed.backup.file.name
        now = self.deleter.stat(name)
        if now is None:
            return "gone (or no longer a regular file)"
        if now != doomed.backup:
            return (f"changed: {now.file.size} bytes, modified "
                    f"{now.file.modified:%Y-%m-%dT%H:%M:%SZ} ({now.token})")
        if doomed.sidecar is not None:
            sidecar = self.deleter.stat(doomed.sidecar.file.name)
            if sidecar is not None and sidecar != doomed.sidecar:
                return f"its sidecar {doomed.sidecar.file.name} changed"
        # The floors again, on a new listing: had newer backups gone meanwhile, this one
        # could be the newest now, or among the keep_min.
        still = {s.file.name for s in to_delete(self.backups(), self.settings,
                                                self.spec.keep_min)}
        if name not in still:
            return "now among the backups to keep (the newest, keep_last, keep_days or keep_min)"
        return None

    def apply(self, item: Item) -> str:
        doomed: Doomed = item.ref
        self.deleter.delete(doomed.backup)
        if doomed.sidecar is None:
            return "deleted (it had no sidecar)"
        name = doomed.sidecar.file.name
        if self.deleter.stat(name) is None:
            return f"deleted; its sidecar {name} was already gone"
        try:
            self.deleter.delete(doomed.sidecar)
        except Exception as exc:  # noqa: BLE001 - reported, with what was done
            raise RuntimeError(f"deleted {doomed.backup.file.name}, but not its sidecar: "
                               f"{exc}") from None
        return f"deleted, and its sidecar {name}"

    def _item(self, doomed: Doomed, newest: Stored, now: datetime) -> Item:
        from opsverify.backup.presence import human_size  # not at the top: it imports targets

        backup = doomed.backup.file
        extra = f" version {doomed.backup.version}" if doomed.backup.version else ""
        age_days = (now - backup.modified).total_seconds() / 86400
        behind = (newest.file.modified - backup.modified).total_seconds() / 86400
        sidecar = (f", with its sidecar {doomed.sidecar.file.name}" if doomed.sidecar
                   else ", no sidecar")
        return Item(
            identity=(f"{self.deleter.where(backup.name)}{extra} {backup.size} bytes "
                      f"modified {backup.modified:%Y-%m-%dT%H:%M:%SZ}"),
            before=(f"{age_days:.1f} days old ({behind:.1f} days before the newest), "
                    f"{human_size(backup.size)}{sidecar}"),
            ref=doomed)

