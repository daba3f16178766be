"""The registry of known secrets and the scrubber every artifact goes through."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
# Values shorter than this are too likely to collide with ordinary text ("5", "on") to mask;
# real passwords, tokens and DSNs are longer.
MIN_SECRET_LEN = 4


class SecretRegistry:
    """A process-wide set of strings that must never appear in output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | None) -> None:
        """Register a secret and the forms it takes inside URLs."""
        if not value or len(value) < MIN_SECRET_LEN:
            return
        forms = {value, quote(value, safe=""), quote_plus(value), unquote(value)}
        forms |= _url_password_forms(value)
        with self._lock:
            before = len(self._values)
            self._values |= {f for f in forms if len(f) >= MIN_SECRET_LEN}
            if len(self._values) != before:
                self._pattern = None

    def add_all(self, values: Iterable[str | None]) -> None:
        for value in values:
            self.add(value)

    @property
    def values(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._values)

    def scrub(self, text: str) -> str:
        """Replace every known secret in ``text`` with ``***``."""
        pattern = self._compiled()
        if pattern is None:
            return text
        return pattern.sub(MASK, text)

    def scrub_file(self, path: Path) -> bool:
        """Scrub one file in place; return whether it changed. Binary files are skipped."""
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            return False
        clean = self.scrub(text)
        if clean == text:
            return False
        path.write_text(clean, encoding="utf-8")
        return True

    def scrub_tree(self, root: Path) -> int:
        """Scrub every file under ``root``; return how many changed."""
        return sum(self.scrub_file(p) for p in sorted(root.rglob("*")) if p.is_file())

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                # Longest first, so a DSN is masked whole rather than around its password.
                alternatives = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))
            return self._pattern


def _url_password_forms(value: str) -> set[str]:
    """If ``value`` is a URL or DSN with a password, the password is a secret of its own."""
    if "://" not in value:
        return set()
    try:
        password = urlsplit(value).password
    except ValueError:
        return set()
    if not password:
        return set()
    return {password, unquote(password)}


SECRETS = SecretRegistry()
