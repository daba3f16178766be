"""Parsed environment files, kept on disk between runs: a file is parsed once, not at every
run of it. For 1,000 targets libyaml's composer, PyYAML's constructor and the line map
took about 55 ms of a 1.6 s run, and importing PyYAML 10 ms more; a hit costs about 3 ms.

An entry holds what the file holds, before interpolation: its values as written, its
``${VAR}`` references unresolved, and the line of every key path. Never a value taken from
the process environment (a secret written literally in the file is kept as the file keeps
it: hence the modes below). Entries are named by the SHA-256 of the file's bytes, of this
format and of the installed PyYAML, so an edited file or another parser is a miss; an entry
that cannot be read or written is a miss too, and the file is parsed as ever.

marshal, not pickle: loading an entry runs no code. A YAML document holds lists, never
tuples, so dates travel as tagged tuples; a value marshal cannot hold (a ``!!set``) leaves
the file uncached. The directory is ``$OPSVERIFY_PARSE_CACHE``, else
``$XDG_CACHE_HOME/opsverify/environments`` or ``~/.cache/opsverify/environments`` (made
0700, entries 0600, the newest KEEP kept); ``OPSVERIFY_PARSE_CACHE=off`` keeps none.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import marshal
import os
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsverify.environment_file import Parsed

FORMAT = b"opsverify-environment-parse 1"
KEEP = 64
_DATE, _DATETIME = "\0date", "\0datetime"


def directory() -> Path | None:
    """Where entries are kept; None when ``OPSVERIFY_PARSE_CACHE=off``."""
    explicit = os.environ.get("OPSVERIFY_PARSE_CACHE")
    if explicit == "off":
        return None
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "opsverify", "environments")


def load(data: bytes) -> Parsed | None:
    """The parse of a file with these bytes, if an earlier run kept it."""
    path = _path(data)
    if path is None:
        return None
    try:
        # Our own entry, in a directory only this user may write (0700).
        entry = marshal.loads(path.read_bytes())  # noqa: S302
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not (isinstance(entry, tuple) and len(entry) == 3):
        return None
    raw, lines, dated = entry
    return (_decode(raw) if dated else raw), lines


def store(data: bytes, parsed: Parsed) -> None:
    """Keep a file's parse for the next run (quietly not, where it cannot be kept)."""
    raw, lines = parsed
    encoded = _encode(raw)
    try:
        blob = marshal.dumps((encoded, lines, encoded != raw))
    except ValueError:
        return  # a value marshal cannot hold
    path = _path(data)
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".entry-")  # mode 0600
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
        os.replace(temporary, path)
        _prune(path.parent)


def _path(data: bytes) -> Path | None:
    where = directory()
    if where is None:
        return None
    digest = hashlib.sha256(FORMAT)
    digest.update(_parser_version())
    digest.update(data)
    return where / f"{digest.hexdigest()}.marshal"


def _parser_version() -> bytes:
    """The installed PyYAML, without importing it (a hit never does)."""
    spec = importlib.util.find_spec("yaml")
    origin = spec.origin if spec is not None else None
    if origin is None:
        return b""
    with contextlib.suppress(OSError):
        stat = os.stat(origin)
        return f"{origin}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return b""


def _prune(where: Path) -> None:
    entries = sorted(where.glob("*.marshal"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        with contextlib.suppress(OSError):
            old.unlink()


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, datetime):  # before date: a datetime is a date
        return (_DATETIME, value.isoformat())
    if isinstance(value, date):
        return (_DATE, value.isoformat())
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, tuple):
        tag, text = value
        return datetime.fromisoformat(text) if tag == _DATETIME else date.fromisoformat(text)
    return value
