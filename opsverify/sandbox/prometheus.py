"""A throw-away Prometheus (Debian's ``prometheus``) scraping the demo service every second.

Its rules are the runbook's (service down for 2 m, 5xx rate) plus an always-firing
``Watchdog`` that the sandbox environment allows, as kube-prometheus ships one. Prometheus
applies discovered targets on a fixed 5 s tick, so the first scrape, and with it a settled
state, comes about 5 s after start; :meth:`PrometheusServer.ready` waits for it. Its TSDB
starts with 30 days of the demo service's requests (``http_requests_total{job="api"}``,
backfilled by :mod:`opsverify.sandbox.prometheus_history`, then kept growing by recording
rules) for the SLO checks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any, ClassVar

import requests
import yaml

from opsverify.sandbox import prometheus_history
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import DEAD_JOB, FAULT_ALERT, FAULTS_OF
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.sandbox.spec import PrometheusComponent

APP_JOB = "ts-forecast-api"
WATCHDOG = "Watchdog"
SETTLE_S = 30  # first scrape is due ~5 s after start; a loaded machine gets slack
RETENTION = "40d"  # keeps the seeded 30 days, and a 30d SLO window's worth after them


class PrometheusServer:
    name: ClassVar[str] = "prometheus"
    install_hint: ClassVar[str] = "apt-get install prometheus"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["prometheus"]

    def __init__(self, spec: PrometheusComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.port = free_port()
        # Chosen now and never bound: the scrape-target-unreachable job's connection is refused.
        self.dead_port = free_port()
        self.app_port = ctx.ports.get("app")
        self.config = ctx.workdir / "prometheus.yml"
        self.rules = ctx.workdir / "prometheus-rules.yml"
        self.storage = ctx.workdir / "prometheus"
        self.log = ctx.workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        # What the TSDB holds before the server starts (a test may seed its own).
        self.history = [prometheus_history.demo_requests(burning="slo-burning" in ctx.faults)]
        self.seeded_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_PROMETHEUS_URL": self.url}

    @property
    def _faults(self) -> frozenset[str]:
        return self.ctx.faults & self.faults.keys()

    def prepare(self) -> None:
        if shutil.which("prometheus") is None:
            raise FileNotFoundError(f"prometheus not found ({self.install_hint})")
        self.storage.mkdir(exist_ok=True)
        # Up to now, then continued by recording rules (_rules): every window has samples.
        self.seeded_at = time.time()
        prometheus_history.backfill(self.storage, self.history, self.seeded_at)
        if "prometheus-not-ready" in self._faults:
            # A write-ahead log segment that never ends: the TSDB replay blocks on reading
            # it, so the server answers /-/healthy but never becomes ready.
            (self.storage / "wal").mkdir()
            os.mkfifo(self.storage / "wal" / "00000000")
        self.config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        self.rules.write_text(yaml.safe_dump(self._rules(), sort_keys=False))

    def _config(self) -> dict[str, Any]:
        jobs = {"prometheus": self.port}
        if self.app_port is not None:
            jobs[APP_JOB] = self.app_port
        if "scrape-target-unreachable" in self._faults:
            jobs[DEAD_JOB] = self.dead_port
        return {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(self.rules)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in jobs.items()
            ],
        }

    def _rules(self) -> dict[str, Any]:
        rules: list[dict[str, Any]] = [
            {"alert": WATCHDOG, "expr": "vector(1)",
             "labels": {"severity": "none"},
             "annotations": {"summary": "always firing: proves rule evaluation works"}},
            {"alert": "ServiceDown", "expr": "up == 0", "for": "2m",
             "labels": {"severity": "critical"},
             "annotations": {"summary": "{{ $labels.job }} {{ $labels.instance }} is down"}},
            {"alert": "HighErrorRate",
             "expr": 'sum(rate(http_requests_total{status=~"5.."}[5m]))'
                     " / sum(rate(http_requests_total[5m])) > 0.05",
             "for": "5m", "labels": {"severity": "warning"},
             "annotations": {"summary": "more than 5 % of API requests fail"}},
        ]
        if "alert-firing" in self._faults:
            rules.append({"alert": FAULT_ALERT, "expr": "vector(1)", "for": "0s",
                          "labels": {"severity": "critical", "service": APP_JOB},
                          "annotations": {"summary": "injected by --sandbox-fault alert-firing"}})
        groups = [{"name": "ts-forecast", "rules": rules}]
        seeded = prometheus_history.continuation_rules(self.history, self.seeded_at)
        if seeded:  # the seeded counters go on growing after the backfill's last sample
            groups.append({"name": "seeded-history", "rules": seeded,
                           "interval": prometheus_history.CONTINUE_EVERY})
        return {"groups": groups}

    def launch(self) -> None:
        binary = shutil.which("prometheus")
        assert binary is not None
        self.process = spawn([
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.storage}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ], log=self.log)

    def ready(self) -> None:
        """Wait until the server is ready, every target has been scraped once and the
        Watchdog fires: the checks then see a settled state, not a starting one."""
        wait_until(lambda: port_open(self.port), timeout_s=15, what="prometheus",
                   process=self.process, log=self.log)
        if "prometheus-not-ready" in self._faults:
            wait_until(lambda: self._status("/-/healthy") == 200, timeout_s=15,
                       what="prometheus /-/healthy", process=self.process, log=self.log)
            return
        wait_until(self._settled, timeout_s=SETTLE_S, what="prometheus first scrape",
                   process=self.process, log=self.log)

    def inject(self, faults: frozenset[str]) -> None:
        # The faults are in the configuration from the start; wait until they show.
        if "alert-firing" in faults:
            wait_until(lambda: FAULT_ALERT in self._firing(), timeout_s=SETTLE_S,
                       what=f"prometheus alert {FAULT_ALERT}", process=self.process, log=self.log)
        if "scrape-target-unreachable" in faults:
            wait_until(lambda: self._health().get(DEAD_JOB) == "down", timeout_s=SETTLE_S,
                       what=f"prometheus target {DEAD_JOB} down", process=self.process,
                       log=self.log)

    def stop(self) -> None:
        if self.process is None:
            return
        # A server blocked reading its log cannot shut down cleanly: do not wait for it.
        blocked = "prometheus-not-ready" in self._faults
        stop(self.process, sig=signal.SIGKILL if blocked else signal.SIGTERM)

    # -- probes used while starting ------------------------------------------------------
    def _settled(self) -> bool:
        health = self._health()
        return (self._status("/-/ready") == 200 and bool(health)
                and "unknown" not in health.values() and WATCHDOG in self._firing())

    def _status(self, path: str) -> int:
        try:
            return requests.get(self.url + path, timeout=1).status_code
        except requests.RequestException:
            return 0

    def _api(self, path: str) -> dict[str, Any]:
        try:
            answer = requests.get(self.url + path, timeout=1)
            data = answer.json().get("data") if answer.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _health(self) -> dict[str, str]:
        """Job -> health of its (single) target."""
        return {str(t["labels"]["job"]): str(t["health"])
                for t in self._api("/api/v1/targets?state=active").get("activeTargets", [])}

    def _firing(self) -> set[str]:
        return {str(a["labels"]["alertname"]) for a in self._api("/api/v1/alerts")
                .get("alerts", []) if a.get("state") == "firing"}
