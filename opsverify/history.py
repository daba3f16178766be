"""Run history: every numeric reading of every run, one JSON object a line.

The file is ``<reports dir>/<env>/history.jsonl`` unless the environment file says
otherwise (``history: {path: ..., keep_days: 400}``; ``s3://bucket/prefix`` too). A line::

    {"time": "2026-12-01T09:00:00Z", "target": "host", "metric": "host.disk_used_pct",
     "item": "/", "value": 71.5, "unit": "%", "capacity": 100}

``metric`` is the threshold id the reading was judged by, ``item`` the check's item (a
filesystem, a database; ``""`` when none) and ``capacity`` the limit the value fills, or
null. The format is documented in docs/history.md so that users can seed it from their own
monitoring; lines that do not parse are skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

FILE_NAME = "history.jsonl"


class HistoryUnavailable(Exception):
    """The history cannot be read or written: one line naming where and why."""


class HistorySpec(BaseModel):
    """``history:`` of an environment file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A file (relative paths are relative to the working directory) or s3://bucket/prefix;
    # unset: <reports dir>/<env>/history.jsonl.
    path: str | None = None
    keep_days: int = Field(default=400, ge=1, le=36500)
    # For an s3:// path: an S3-compatible endpoint and credentials (else the AWS chain).
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("s3://"):
            parts = urlsplit(value)
            if not parts.netloc:
                raise ValueError("an s3:// history path needs a bucket: s3://bucket/prefix")
        return value

    def secrets(self) -> list[str]:
        return [v for v in (self.access_key_id, self.secret_access_key) if v]


@dataclass(frozen=True)
class Sample:
    """One reading of one metric of one target."""

    time: datetime
    target: str
    metric: str
    item: str
    value: float
    unit: str = ""
    capacity: float | None = None

    def to_json(self) -> str:
        return json.dumps({
            "time": self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "target": self.target, "metric": self.metric, "item": self.item,
            "value": self.value, "unit": self.unit, "capacity": self.capacity,
        }, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Sample:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        capacity = data.get("capacity")
        return cls(
            time=parse_time(str(data["time"])),
            target=str(data["target"]),
            metric=str(data["metric"]),
            item=str(data.get("item") or ""),
            value=_finite(data["value"]),
            unit=str(data.get("unit") or ""),
            capacity=None if capacity is None else _finite(capacity),
        )


def parse_time(text: str) -> datetime:
    """ISO-8601; a time without a zone is UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _finite(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a reading")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


class Store(Protocol):
    """Where the lines live: a local file or an S3 object."""

    where: str

    def read(self) -> str: ...

    def write(self, text: str) -> None: ...

    def append(self, text: str) -> None: ...


class FileStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise HistoryUnavailable(f"history {self.where}: cannot read: {exc.strerror}") from None

    def write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)

    def append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)


class S3Store:
    """One object, ``<prefix>/<env>/history.jsonl``, rewritten whole after each run (S3 has
    no append; a run's history is small)."""

    def __init__(self, spec: HistorySpec, env_name: str, timeout_s: float = 10.0) -> None:
        assert spec.path is not None
        parts = urlsplit(spec.path)
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        self.key = "/".join(p for p in (prefix, env_name, FILE_NAME) if p)
        self.where = f"s3://{self.bucket}/{self.key}"
        self.spec = spec
        self.timeout_s = timeout_s
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            kwargs: dict[str, Any] = {}
            if self.spec.access_key_id:
                kwargs.update(aws_access_key_id=self.spec.access_key_id,
                              aws_secret_access_key=self.spec.secret_access_key)
            config = Config(connect_timeout=self.timeout_s, read_timeout=self.timeout_s,
                            retries={"max_attempts": 1},
                            s3={"addressing_style": "path" if self.spec.endpoint_url
                                else "auto"})
            self._client = boto3.session.Session().client(
                "s3", region_name=self.spec.region, endpoint_url=self.spec.endpoint_url,
                config=config, **kwargs)
        return self._client

    def read(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self._s3().get_object(Bucket=self.bucket, Key=self.key)["Body"]
            return str(body.read().decode("utf-8"))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404"):
                return ""
            raise HistoryUnavailable(f"history {self.where}: {code or exc}") from None
        except BotoCoreError as exc:
            raise HistoryUnavailable(f"history {self.where}: {exc}") from None

    def write(self, text: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3().put_object(Bucket=self.bucket, Key=self.key, Body=text.encode("utf-8"),
                                  ContentType="application/x-ndjson")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise HistoryUnavailable(f"history {self.where}: cannot write: {code}") from None
        except BotoCoreError as exc:
            raise HistoryUnavailable(f"history {self.where}: cannot write: {exc}") from None

    def append(self, text: str) -> None:
        self.write(self.read() + text)


def store_for(spec: HistorySpec | None, env_name: str, reports_env_dir: Path) -> Store:
    if spec is None or spec.path is None:
        return FileStore(reports_env_dir / FILE_NAME)
    if spec.path.startswith("s3://"):
        return S3Store(spec, env_name)
    return FileStore(Path(spec.path))


Key = tuple[str, str, str]  # target, metric, item


class History:
    """The readings of earlier runs, by ``(target, metric, item)``, oldest first."""

    def __init__(self, samples: Iterable[Sample] = (), *, skipped: int = 0,
                 where: str = "") -> None:
        self.where = where
        self.skipped = skipped
        self._by_key: dict[Key, list[Sample]] = defaultdict(list)
        for sample in samples:
            self._by_key[(sample.target, sample.metric, sample.item)].append(sample)
        for series in self._by_key.values():
            series.sort(key=lambda s: s.time)

    @classmethod
    def parse(cls, text: str, where: str = "") -> History:
        samples, skipped = [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                samples.append(Sample.from_json(line))
            except (ValueError, KeyError, TypeError):
                skipped += 1
        return cls(samples, skipped=skipped, where=where)

    def series(self, target: str, metric: str, item: str = "") -> list[Sample]:
        return list(self._by_key.get((target, metric, item), ()))

    def previous(self, target: str, metric: str, item: str = "") -> Sample | None:
        series = self._by_key.get((target, metric, item))
        return series[-1] if series else None

    def keys(self) -> list[Key]:
        return sorted(self._by_key)

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_key.values())


def load(store: Store) -> History:
    return History.parse(store.read(), store.where)


def append(store: Store, samples: list[Sample], *, keep_days: int,
           now: datetime | None = None) -> int:
    """Add one run's readings; drop lines older than ``keep_days`` (at most once a run,
    and only when there is something to drop). Returns the number of lines written."""
    if not samples:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    text = store.read()
    lines = text.splitlines()
    kept = [line for line in lines if _keep(line, cutoff)]
    new = "".join(s.to_json() + "\n" for s in samples)
    if len(kept) != len(lines):
        store.write("".join(line + "\n" for line in kept) + new)
    else:
        store.append(("\n" if text and not text.endswith("\n") else "") + new)
    return len(samples)


def _keep(line: str, cutoff: datetime) -> bool:
    if not line.strip():
        return False
    try:
        return parse_time(str(json.loads(line)["time"])) >= cutoff
    except (ValueError, KeyError, TypeError):
        return True  # a user's line we cannot read is theirs to fix, not ours to delete


def samples_from_evidence(time: datetime, checks: Iterable[Mapping[str, Any]]) -> list[Sample]:
    """The readings of one run: every numeric measurement whose name is a metric id
    (dotted, ``host.disk_used_pct``), from the evidence of each check."""
    out: list[Sample] = []
    seen: set[tuple[str, str, str]] = set()
    for check in checks:
        for m in check.get("evidence", ()):
            name, value = str(m.get("name", "")), m.get("value")
            if "." not in name or " " in name or isinstance(value, bool):
                continue
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            target, item = str(m.get("target", "")), str(m.get("item", ""))
            key = (target, name, item)
            if not target or key in seen:
                continue
            seen.add(key)
            capacity = m.get("capacity")
            out.append(Sample(time, target, name, item, float(value), str(m.get("unit", "")),
                              None if capacity is None else float(capacity)))
    return out
