"""A throw-away redis-server with a password and a little realistic state."""

from __future__ import annotations

import shutil
import subprocess
from typing import ClassVar

import redis

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.sandbox.spec import RedisComponent


class RedisServer:
    name: ClassVar[str] = "redis"
    install_hint: ClassVar[str] = "apt-get install redis-server"
    faults: ClassVar[dict[str, str]] = {
        "redis-down": "Redis is not started: its port refuses connections",
    }

    def __init__(self, spec: RedisComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.workdir = ctx.workdir
        self.port = free_port()
        self.password = ctx.password
        self.log = ctx.workdir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_REDIS_URL": self.url}

    def inject(self, faults: frozenset[str]) -> None:
        pass

    def prepare(self) -> None:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError(f"redis-server not found ({self.install_hint})")
        datadir = self.workdir / "redis"
        datadir.mkdir()
        config = self.workdir / "redis.conf"
        # The password goes in a file, not argv, where `ps` would show it.
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nrequirepass {self.password}\n"
            f"dir {datadir}\ndbfilename dump.rdb\nsave \"\"\nappendonly no\n"
            "daemonize no\nprotected-mode yes\n"
        )
        config.chmod(0o600)

    def launch(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = spawn([binary, str(self.workdir / "redis.conf")], log=self.log)

    def ready(self) -> None:
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
        if self.process is not None:
            stop(self.process)
