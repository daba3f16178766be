"""The sandbox component that runs the demo HTTP service (``demo_app.py``)."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import FAULTS_OF
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.sandbox.spec import AppComponent
from opsverify.sandbox.tls import TlsFiles, make_tls


class AppServer:
    """The demo HTTP service in its own Python process: plain HTTP on ``port``, the same
    routes over TLS on ``tls_port`` with a certificate from the run's own CA."""

    name: ClassVar[str] = "app"
    install_hint: ClassVar[str] = "pip install -e ."
    faults: ClassVar[dict[str, str]] = FAULTS_OF["app"]

    def __init__(self, spec: AppComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.port = free_port()
        self.tls_port = free_port()
        self.tls_dir = ctx.workdir / "tls"
        self.tls = TlsFiles.under(self.tls_dir)  # written by prepare()
        # /health/detailed reports these by TCP reachability, like a real app's dependencies.
        self.dependencies = {label: ctx.ports[name] for name, label in
                             (("postgres", "database"), ("redis", "cache")) if name in ctx.ports}
        self.log = ctx.workdir / "app.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_APP_URL": self.url, "SANDBOX_APP_TLS_URL": self.tls_url,
                "SANDBOX_CA_FILE": str(self.tls.ca)}

    def prepare(self) -> None:
        make_tls(self.tls_dir, expired="cert-expired" in self.ctx.faults)

    def launch(self) -> None:
        argv = [sys.executable, "-m", "opsverify.sandbox.demo_app", "--port", str(self.port)]
        argv += [f"--fault={f}" for f in sorted(self.ctx.faults & self.faults.keys())]
        argv += [f"--dependency={n}={p}" for n, p in sorted(self.dependencies.items())]
        argv += ["--tls-port", str(self.tls_port), "--cert", str(self.tls.cert),
                 "--key", str(self.tls.key)]
        self.process = spawn(argv, log=self.log)

    def ready(self) -> None:
        wait_until(lambda: port_open(self.port) and port_open(self.tls_port), timeout_s=15,
                   what="demo app",
                   process=self.process, log=self.log)

    def inject(self, faults: frozenset[str]) -> None:
        pass  # the app's faults are passed on its command line

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
