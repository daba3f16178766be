"""opsverify benchmarks: ratios against baselines taken in the same run (DESIGN.md §9).

    .venv/bin/python bench/run.py [--targets 10,100,1000] [--latency-ms 50]

1. harness overhead: `pytest -m daily` over N HTTP targets (health checks only) against a raw
   `requests` loop doing the same GETs (the fixture's reachability probe + the health GET);
2. injected latency: the same with every response delayed, against an ideal concurrent loop
   (all probes at once: the floor is one latency);
3. growth: wall time from the smallest to the largest N, against the ideal ratio;
4. Nagios style: the same probes as `check_http` processes, one fork per check, when
   monitoring-plugins is installed.

Nothing here runs in CI; results go to stdout and bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
CHECK_HTTP = Path("/usr/lib/nagios/plugins/check_http")


class Handler(BaseHTTPRequestHandler):
    delay_s = 0.0

    def do_GET(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        body = b'{"status": "healthy"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(delay_s: float) -> tuple[ThreadingHTTPServer, int]:
    handler = type("DelayedHandler", (Handler,), {"delay_s": delay_s})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def environment(path: Path, port: int, n: int) -> Path:
    lines = ["description: bench", "settings: {timeout_s: 10}", "targets:"]
    for i in range(n):
        lines += [f"  api-{i}:", "    type: http", f"    url: http://127.0.0.1:{port}",
                  "    health: {path: /health, expect_status: 200, "
                  "expect_json: {status: healthy}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_pytest(env: Path, reports: Path, *extra: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        # `--opt=PATH`, never `--opt PATH`: pytest would take an existing path outside the
        # repository for its rootdir, before our options are known.
        [sys.executable, "-m", "pytest", "-q", "-m", "daily", f"--env={env}",
         f"--reports-dir={reports}", "-k", "test_health", "checks/health/test_http.py",
         *extra],
        cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return wall


def raw_loop(port: int, n: int) -> float:
    started = time.perf_counter()
    with requests.Session() as session:
        for _ in range(n):
            for _ in range(2):  # reachability probe + the health GET, as the suite does
                response = session.get(f"http://127.0.0.1:{port}/health", timeout=10)
                assert response.json()["status"] == "healthy"
    return time.perf_counter() - started


def ideal_concurrent(port: int, n: int) -> float:
    def probe(_: int) -> None:
        requests.get(f"http://127.0.0.1:{port}/health", timeout=30).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(n, 256)) as pool:
        list(pool.map(probe, range(n)))
    return time.perf_counter() - started


def nagios(port: int, n: int) -> float | None:
    if not CHECK_HTTP.exists():
        return None
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run([str(CHECK_HTTP), "-H", "127.0.0.1", "-p", str(port), "-u", "/health",
                        "-s", "healthy"], capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="10,100,1000")
    parser.add_argument("--latency-ms", type=float, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.targets.split(",")]
    work = Path(tempfile.mkdtemp(prefix="opsverify-bench-"))
    results: dict[str, object] = {"when": datetime.now().isoformat(timespec="seconds")}
    try:
        server, port = serve(0.0)
        rows = []
        for n in sizes:
            env = environment(work / f"fast-{n}.yaml", port, n)
            suite = run_pytest(env, work / "reports")
            raw = raw_loop(port, n)
            nag = nagios(port, n)
            rows.append({"targets": n, "suite_s": round(suite, 3), "raw_loop_s": round(raw, 3),
                         "overhead_ratio": round(suite / raw, 1),
                         "nagios_s": None if nag is None else round(nag, 3),
                         "suite_vs_nagios": None if nag is None else round(suite / nag, 2)})
            print(rows[-1], flush=True)
        results["overhead"] = rows
        small, large = rows[0], rows[-1]
        results["growth"] = {
            "from": small["targets"], "to": large["targets"],
            "wall_ratio": round(large["suite_s"] / small["suite_s"], 1),
            "ideal_ratio": large["targets"] / small["targets"]}
        print(results["growth"], flush=True)
        server.shutdown()

        slow, slow_port = serve(args.latency_ms / 1000)
        n = sizes[min(1, len(sizes) - 1)]
        env = environment(work / f"slow-{n}.yaml", slow_port, n)
        latency = {"targets": n, "latency_ms": args.latency_ms,
                   "suite_s": round(run_pytest(env, work / "reports"), 3),
                   "suite_n2_s": round(run_pytest(env, work / "reports", "-n", "2"), 3),
                   "ideal_concurrent_s": round(ideal_concurrent(slow_port, n), 3)}
        latency["ratio"] = round(latency["suite_s"] / latency["ideal_concurrent_s"], 1)
        latency["ratio_n2"] = round(latency["suite_n2_s"] / latency["ideal_concurrent_s"], 1)
        results["latency"] = latency
        print(latency, flush=True)
        slow.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{datetime.now():%Y%m%d-%H%M%S}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
