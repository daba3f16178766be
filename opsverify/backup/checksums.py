"""L2: a backup's bytes are the bytes its writer recorded: a ``.sha256`` sidecar (the format
``sha256sum`` writes) or the SHA-256 the object store keeps for the object."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from opsverify.targets.base import Deadline

CHUNK = 1024 * 1024
HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Sidecar:
    """What a sidecar says: the digest, and the file name it names (if any)."""

    digest: str
    names: str = ""


def sha256_of(path: Path, deadline: Deadline) -> str:
    """SHA-256 of a local file, reading it whole; raises TimeoutError past the deadline."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if deadline.expired():
                raise TimeoutError
    return digest.hexdigest()


def parse_sidecar(content: bytes) -> Sidecar | None:
    """``<hex>  <name>`` (text mode), ``<hex> *<name>`` (binary mode) or a bare ``<hex>``;
    ``None`` when the sidecar holds no SHA-256."""
    text = content.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    first = text.splitlines()[0].strip()
    digest, _, rest = first.partition(" ")
    digest = digest.lower().lstrip("\\")
    if not HEX.match(digest):
        return None
    return Sidecar(digest, rest.strip().lstrip("*"))
