"""A seeded SQLite file like the ERPFTS runbook's ``erpfts.db``: no server, no process."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path
from typing import ClassVar

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import FAULTS_OF
from opsverify.sandbox.spec import SqliteComponent

INTERIOR_PAGES = (0x02, 0x05)  # b-tree page types: index, table
LEAF_PAGES = (0x0A, 0x0D)
TORN_CELLS = 8


class SqliteFile:
    name: ClassVar[str] = "sqlite"
    install_hint: ClassVar[str] = "Python's sqlite3 module"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["sqlite"]

    def __init__(self, spec: SqliteComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.path = ctx.workdir / spec.file
        self.port = 0  # a file: nothing listens, nothing to skip by port

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_SQLITE_PATH": str(self.path)}

    def prepare(self) -> None:
        seed(self.path)

    def launch(self) -> None:
        pass

    def ready(self) -> None:
        pass

    def inject(self, faults: frozenset[str]) -> None:
        if "sqlite-corrupt" in faults:
            corrupt(self.path)

    def stop(self) -> None:
        pass


def seed(path: Path) -> None:
    """Documents and their chunks, as ERPFTS keeps them next to its vector store."""
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        conn.executemany(
            "INSERT INTO documents (title, source_path, content_hash) VALUES (?, ?, ?)",
            [(f"ERP manual part {i}", f"/opt/erpfts/docs/manual-{i:03d}.pdf", f"{i * 7919:064x}")
             for i in range(1, 41)])
        conn.executemany(
            "INSERT INTO chunks (document_id, position, text, embedding_id) VALUES (?, ?, ?, ?)",
            [(1 + i % 40, i // 40, f"Section {i}: posting journal entries and closing periods. "
              * 2, f"knowledge_chunks-{i}") for i in range(800)])
    conn.close()


def corrupt(path: Path, btree: str = "chunks_document") -> int:
    """Overwrite cell pointers of a leaf page of a table's or index's b-tree with 0xff, as
    a torn write would; return the page number. The file still opens and its rows still
    read; ``PRAGMA quick_check`` reports one problem per overwritten pointer.

    The default is an index: quick_check does not read index rows, so what it reports is
    exactly the b-tree damage. Damage in a table's page can also stop it with "database
    disk image is malformed" before it reports, which the check shows as well."""
    with sqlite3.connect(path) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                            (btree,)).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    page = int(root)
    while data[(page - 1) * page_size + _header_offset(page)] in INTERIOR_PAGES:
        start = (page - 1) * page_size + _header_offset(page)
        page = struct.unpack(">I", data[start + 8:start + 12])[0]  # the right-most child
    start = (page - 1) * page_size + _header_offset(page)
    if data[start] not in LEAF_PAGES:
        raise RuntimeError(f"{path.name}: page {page} is not a b-tree leaf page")
    cells = min(TORN_CELLS, struct.unpack(">H", data[start + 3:start + 5])[0])
    pointers = start + 8  # the cell pointer array follows the 8-byte leaf page header
    data[pointers:pointers + 2 * cells] = b"\xff" * (2 * cells)
    path.write_bytes(bytes(data))
    return page


def _header_offset(page: int) -> int:
    return 100 if page == 1 else 0  # page 1 starts with the 100-byte file header


SCHEMA = """
CREATE TABLE documents (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, source_path TEXT NOT NULL,
    content_hash TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL REFERENCES documents(id),
    position INTEGER NOT NULL, text TEXT NOT NULL, embedding_id TEXT);
CREATE INDEX chunks_document ON chunks (document_id);
"""
