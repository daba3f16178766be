"""The installed PostgreSQL client programs, by major version.

Debian installs each major version's programs in ``/usr/lib/postgresql/<major>/bin``; a
restore drill uses the ``pg_restore`` of the scratch server's major version when it is
installed (else the newest, which restores into older servers too, within what pg_dump
supports), and reading an archive uses the newest (it reads every older archive version).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

INSTALL_HINT = "apt-get install postgresql-client"
VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


@cache
def installed(program: str = "pg_restore") -> dict[int, Path]:
    """Major version -> path of ``program`` for every installed version."""
    found: dict[int, Path] = {}
    for path in Path("/usr/lib/postgresql").glob(f"*/bin/{program}"):
        major = path.parent.parent.name
        if major.isdigit():
            found[int(major)] = path
    on_path = shutil.which(program)
    if on_path:
        major_found = _major_of(Path(on_path))
        if major_found is not None:
            found.setdefault(major_found, Path(on_path))
    return found


def newest(program: str = "pg_restore") -> Path:
    versions = installed(program)
    if not versions:
        raise FileNotFoundError(f"{program} not found ({INSTALL_HINT})")
    return versions[max(versions)]


def for_server(server_version_num: int, program: str = "pg_restore") -> Path:
    """The ``program`` of the server's major version, else the newest installed."""
    versions = installed(program)
    if not versions:
        raise FileNotFoundError(f"{program} not found ({INSTALL_HINT})")
    major = server_version_num // 10000
    return versions.get(major, versions[max(versions)])


def version_of(path: Path) -> str:
    """``pg_restore (PostgreSQL) 15.18`` -> ``15.18``."""
    match = VERSION.search(_version_text(path))
    return ".".join(g for g in match.groups() if g) if match else "unknown"


def _major_of(path: Path) -> int | None:
    match = VERSION.search(_version_text(path))
    return int(match.group(1)) if match else None


@cache
def _version_text(path: Path) -> str:
    try:
        return subprocess.run([str(path), "--version"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
