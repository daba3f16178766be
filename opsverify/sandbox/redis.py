"""A throw-away redis-server with a password and a little realistic state."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from opsverify.sandbox.process import port_open, spawn, stop, wait_until
from opsverify.sandbox.spec import RedisComponent


class RedisServer:
    install_hint = "apt-get install redis-server"

    def __init__(self, spec: RedisComponent, workdir: Path, port: int, password: str) -> None:
        self.spec = spec
        self.workdir = workdir
        self.port = port
        self.password = password
        self.log = workdir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

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
