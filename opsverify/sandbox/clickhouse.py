"""A throw-away clickhouse-server (Debian's 18.16) seeded like the gogooku3 runbook's.

It runs in the foreground with a config of its own in ``workdir/clickhouse``, serving only
the HTTP interface on 127.0.0.1 (no native TCP or interserver port). Two users share the
password in ``SANDBOX_CLICKHOUSE_PASSWORD``, stored as SHA-256 only: ``sandbox_admin``
seeds, ``opsverify`` is the monitoring user the checks connect as.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import ClassVar

import requests

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import DROPPED_TABLE, FAULTS_OF
from opsverify.sandbox.process import free_port, spawn, stop, wait_until
from opsverify.sandbox.spec import ClickHouseComponent

ADMIN_USER = "sandbox_admin"
MONITOR_USER = "opsverify"
TABLES = ("prices", "features")


def binary() -> Path | None:
    """clickhouse-server is in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which("clickhouse-server") or (
        "/usr/sbin/clickhouse-server" if os.access("/usr/sbin/clickhouse-server", os.X_OK)
        else None)
    return Path(found) if found else None


def _server_user() -> str | None:
    """As root, run as the package's ``clickhouse`` user; otherwise as whoever we are."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("clickhouse")
    except KeyError:
        return None
    return "clickhouse"


class ClickHouseServer:
    name: ClassVar[str] = "clickhouse"
    install_hint: ClassVar[str] = "apt-get install clickhouse-server"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["clickhouse"]

    def __init__(self, spec: ClickHouseComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.port = free_port()
        # Its own password, not the shared one: a target that holds a skipped component's
        # variable is skipped, and every other target holds the shared password.
        self.password = f"{ctx.password}-clickhouse"
        self.faults_wanted = ctx.faults
        self.home = ctx.workdir / "clickhouse"
        self.log = ctx.workdir / "clickhouse.log"
        self.user = _server_user()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_CLICKHOUSE_URL": self.url,
                "SANDBOX_CLICKHOUSE_PASSWORD": self.password}

    def prepare(self) -> None:
        if binary() is None:
            raise FileNotFoundError(f"clickhouse-server not found ({self.install_hint})")
        self.home.mkdir(mode=0o700)
        (self.home / "config.xml").write_text(CONFIG.format(home=self.home, port=self.port))
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        quota = 1 if "clickhouse-quota-exhausted" in self.faults_wanted else 0
        users = self.home / "users.xml"
        users.write_text(USERS.format(admin=ADMIN_USER, monitor=MONITOR_USER, digest=digest,
                                      queries=quota))
        users.chmod(0o600)
        if self.user:
            for path in (self.home, self.home / "config.xml", users):
                shutil.chown(path, self.user, self.user)

    def launch(self) -> None:
        path = binary()
        assert path is not None
        self.process = spawn([str(path), f"--config-file={self.home / 'config.xml'}"],
                             log=self.log, user=self.user)

    def ready(self) -> None:
        wait_until(self._pings, timeout_s=30, what="clickhouse-server", process=self.process,
                   log=self.log)
        db = self.spec.database
        for statement in (
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.prices (code String, date Date, open Float64, high Float64, "
            "low Float64, close Float64, volume UInt64) ENGINE = MergeTree "
            "ORDER BY (code, date)",
            f"CREATE TABLE {db}.features (code String, date Date, name String, value Float64) "
            "ENGINE = MergeTree ORDER BY (code, date, name)",
            f"INSERT INTO {db}.prices SELECT toString(7200 + number % 50), "
            "toDate('2026-01-05') + intDiv(number, 50), 1000 + number % 97, "
            "1010 + number % 97, 990 + number % 97, 1005 + number % 89, number * 13 "
            "FROM system.numbers LIMIT 5000",
            f"INSERT INTO {db}.features SELECT code, date, 'return_1d', (close - open) / open "
            f"FROM {db}.prices",
        ):
            self.admin(statement)

    def inject(self, faults: frozenset[str]) -> None:
        if "clickhouse-table-missing" in faults:
            self.admin(f"DROP TABLE {self.spec.database}.{DROPPED_TABLE}")
        if "clickhouse-quota-exhausted" in faults:
            self.exhaust_quota()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def admin(self, statement: str) -> None:
        """One write as the admin user: a POST (GET is read-only in ClickHouse)."""
        response = requests.post(self.url, data=statement.encode(), timeout=30,
                                 headers=self._auth(ADMIN_USER))
        if response.status_code != 200:
            raise RuntimeError(f"clickhouse: {statement.split('(')[0].strip()}: "
                               f"{response.text.strip()[:200]}")

    def exhaust_quota(self) -> None:
        """Use up the monitoring user's quota of one query per hour."""
        for _ in range(5):
            response = requests.get(self.url, params={"query": "SELECT 1"}, timeout=10,
                                    headers=self._auth(MONITOR_USER))
            if "Code: 201" in response.text:
                return
            time.sleep(0.05)
        raise RuntimeError("clickhouse: the monitoring user's quota did not run out")

    def _auth(self, user: str) -> dict[str, str]:
        return {"X-ClickHouse-User": user, "X-ClickHouse-Key": self.password}

    def _pings(self) -> bool:
        try:
            # .content, not .text: requests would guess a charset for the bare "Ok.\n".
            return requests.get(f"{self.url}/ping", timeout=1).content.strip() == b"Ok."
        except requests.RequestException:
            return False


CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>1</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{port}</http_port>
    <path>{home}/data/</path>
    <tmp_path>{home}/data/tmp/</tmp_path>
    <user_files_path>{home}/data/user_files/</user_files_path>
    <format_schema_path>{home}/data/format_schemas/</format_schema_path>
    <users_config>{home}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <max_connections>64</max_connections>
    <max_concurrent_queries>20</max_concurrent_queries>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
</yandex>
"""

USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>1000000000</max_memory_usage></default></profiles>
    <users>
        <{admin}>
            <password_sha256_hex>{digest}</password_sha256_hex>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile><quota>unlimited</quota>
        </{admin}>
        <{monitor}>
            <password_sha256_hex>{digest}</password_sha256_hex>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile><quota>monitoring</quota>
        </{monitor}>
    </users>
    <quotas>
        <unlimited><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
            <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
        </interval></unlimited>
        <monitoring><interval><duration>3600</duration><queries>{queries}</queries>
            <errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows>
            <execution_time>0</execution_time>
        </interval></monitoring>
    </quotas>
</yandex>
"""
