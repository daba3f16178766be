"""A throw-away redis-server with a password and a little realistic state."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import TYPE_CHECKING, ClassVar

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import FAULTS_OF, FULL_PCT, IDLE_CLIENTS, MAXMEMORY_MB
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.sandbox.spec import RedisComponent

# redis is imported by the functions that use it: a sandbox imports every
# component (runtime.COMPONENTS), and many start only some of them.
if TYPE_CHECKING:
    import redis

# CLIENT LIST counts idle time in whole seconds; the sandbox counts over 1 s as idle.
IDLE_WAIT_S = 2.2


class RedisServer:
    """A master with RDB snapshots on (``save 3600 1``), no append-only file, and a
    ``maxmemory`` that refuses writes rather than evict (``noeviction``)."""

    name: ClassVar[str] = "redis"
    install_hint: ClassVar[str] = "apt-get install redis-server"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["redis"]

    def __init__(self, spec: RedisComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.workdir = ctx.workdir
        self.port = free_port()
        self.password = ctx.password
        self.no_auth = "redis-no-auth" in ctx.faults
        self.log = ctx.workdir / "redis.log"
        self.datadir = ctx.workdir / "redis"
        self.process: subprocess.Popen[bytes] | None = None
        self.leaked: list[redis.Redis] = []  # redis-idle-clients: its open connections

    @property
    def url(self) -> str:
        if self.no_auth:  # what its clients were reconfigured to: no password to send
            return f"redis://127.0.0.1:{self.port}/0"
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_REDIS_URL": self.url, "SANDBOX_REDIS_PORT": str(self.port)}

    def inject(self, faults: frozenset[str]) -> None:
        if "redis-bgsave-failed" in faults:
            self.lose_data_directory()
        if "redis-memory-full" in faults:
            self.fill_memory()
        if "redis-idle-clients" in faults:
            self.open_idle_clients(IDLE_CLIENTS)
            time.sleep(IDLE_WAIT_S)

    def open_idle_clients(self, count: int) -> None:
        """Connections a leaking pool opened, used once and left open (held until stop)."""
        import redis

        for _ in range(count):
            client = redis.Redis.from_url(self.url, socket_timeout=5,
                                          client_name="forecast-worker")
            client.get("forecast:cache:0")
            self.leaked.append(client)

    def fill_memory(self, pct: float = FULL_PCT) -> None:
        """Write cached blobs until ``used_memory`` is ``pct`` % of ``maxmemory``; with
        ``noeviction`` nothing is evicted, and writes still succeed below the limit."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            limit = int(client.info("memory")["maxmemory"])
            blob = b"\0" * 64 * 1024
            for i in range(4 * limit // len(blob)):  # bounded: each write fills at least 1 KiB
                used = int(client.info("memory")["used_memory"])
                room = int(limit * pct / 100) - used
                if room < 1024:
                    break
                client.set(f"forecast:blob:{i}", blob[:min(len(blob), room)], ex=86400)
        finally:
            client.close()

    def lose_data_directory(self) -> None:
        """Remove the directory Redis saves into, write, and let a real BGSAVE fail."""
        import redis

        shutil.rmtree(self.datadir)
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.set("forecast:cache:latest", "unsaved")
            client.bgsave()

            def failed() -> bool:
                info = client.info("persistence")
                return (not info["rdb_bgsave_in_progress"]
                        and info["rdb_last_bgsave_status"] == "err")

            wait_until(failed, timeout_s=10, what="the failed BGSAVE", process=self.process,
                       log=self.log)
        finally:
            client.close()

    def prepare(self) -> None:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError(f"redis-server not found ({self.install_hint})")
        self.datadir.mkdir()
        config = self.workdir / "redis.conf"
        # The password goes in a file, not argv, where `ps` would show it.
        password = "" if self.no_auth else f"requirepass {self.password}\n"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\n{password}"
            f"dir {self.datadir}\ndbfilename dump.rdb\nsave 3600 1\nappendonly no\n"
            "daemonize no\nprotected-mode yes\n"
            f"maxmemory {MAXMEMORY_MB}mb\nmaxmemory-policy noeviction\n"
        )
        config.chmod(0o600)

    def launch(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = spawn([binary, str(self.workdir / "redis.conf")], log=self.log)

    def ready(self) -> None:
        import redis

        wait_until(lambda: port_open(self.port), timeout_s=15, what="redis-server",
                   process=self.process, log=self.log)
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        with client.pipeline() as pipe:
            for i in range(50):
                pipe.set(f"forecast:cache:{i}", f"{i * 1.5}", ex=3600)
            pipe.execute()
        client.save()
        client.close()

    def stop(self) -> None:
        for client in self.leaked:
            client.close()
        if self.process is not None:
            stop(self.process)
