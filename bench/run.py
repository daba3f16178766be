"""opsverify benchmarks: ratios against baselines taken in the same run (DESIGN.md §9).

    .venv/bin/python bench/run.py [--repeat 3] [--big 10000]

Every row is a ratio of two things timed side by side, the median of ``--repeat`` runs:

1. harness overhead: `pytest -m daily` over 1,000 HTTP targets (health checks) against
   pytest's own wall for 1,000 trivial tests plus a raw serial `requests` loop of the same
   1,000 GETs;
2. injected latency: 500 targets answering in 20 ms, the suite's extra wall over zero latency
   against the same for an ideal 10-thread `requests` loop;
3. Nagios style: the same 1,000 probes as `check_http` processes, one fork per check
   (monitoring-plugins-basic);
4. hung targets: 10 targets that accept and never answer (`timeout_s: 2`) against 1;
5. an outage: 1,000 targets that refuse connections (each check one ERROR line) against the
   same 1,000 answering;
6. peak RSS at 1,000 targets, and wall and peak RSS at ``--big`` targets.

Nothing here runs in CI; results go to stdout and bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
CHECK_HTTP = Path("/usr/lib/nagios/plugins/check_http")
BODY = b'{"status": "healthy"}'


class Handler(BaseHTTPRequestHandler):
    delay_s = 0.0

    def do_GET(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog, read when the server binds (setting it on the instance afterwards
    # left Python's default of 5: concurrent clients overflowed it, and each dropped SYN cost
    # a 1 s retransmission that no serial baseline ever paid).
    request_queue_size = 1024


def serve(delay_s: float) -> tuple[ThreadingHTTPServer, int]:
    handler = type("DelayedHandler", (Handler,), {"delay_s": delay_s})
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def hung_socket() -> tuple[socket.socket, int]:
    """Accepts connections (the kernel's backlog does) and never answers."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    return sock, sock.getsockname()[1]


def environment(path: Path, port: int, n: int, timeout_s: float = 10) -> Path:
    lines = ["description: bench", f"settings: {{timeout_s: {timeout_s}}}", "targets:"]
    for i in range(n):
        lines += [f"  api-{i}:", "    type: http", f"    url: http://127.0.0.1:{port}",
                  "    health: {path: /health, expect_status: 200, "
                  "expect_json: {status: healthy}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def timed(argv: list[str], cwd: Path, ok: tuple[int, ...] = (0,),
          environ: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=environ)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in ok:
        raise SystemExit(f"{argv[:4]} exited {proc.returncode}:\n{output[-3000:].decode()}")
    return wall, usage.ru_maxrss / 1024


def suite(env: Path, reports: Path, ok: tuple[int, ...] = (0,),
          environ: dict[str, str] | None = None) -> tuple[float, float]:
    # `--opt=PATH`, never `--opt PATH`: pytest would take an existing path outside the
    # repository for its rootdir, before our options are known.
    return timed([sys.executable, "-m", "pytest", "-q", "-m", "daily", f"--env={env}",
                  f"--reports-dir={reports}", "-k", "test_health",
                  "checks/health/test_http.py"], ROOT, ok, environ)


def warm_up(env: Path, reports: Path) -> None:
    """One unmeasured run that leaves the bytecode cached, as any ``./ops`` command does:
    where ``PYTHONDONTWRITEBYTECODE`` is set (this machine sets it), every run would
    otherwise compile the suite's own modules and rewrite the asserts of its plugins. It
    also leaves the environment file's parse kept, as any earlier run of a file does."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    suite(env, reports, environ=environ)


def trivial_pytest(work: Path, n: int) -> float:
    directory = work / "trivial"
    directory.mkdir(exist_ok=True)
    (directory / "test_trivial.py").write_text(
        f"import pytest\n\n\n@pytest.mark.parametrize('i', range({n}))\n"
        "def test_trivial(i):\n    assert i >= 0\n")
    return timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "test_trivial.py"], directory)[0]


def raw_loop(port: int, n: int) -> float:
    started = time.perf_counter()
    with requests.Session() as session:
        for _ in range(n):
            response = session.get(f"http://127.0.0.1:{port}/health", timeout=10)
            assert response.json()["status"] == "healthy"
    return time.perf_counter() - started


def ideal_loop(port: int, n: int, threads: int = 10) -> float:
    local = threading.local()

    def probe(_: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        session.get(f"http://127.0.0.1:{port}/health", timeout=30).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(probe, range(n)))
    return time.perf_counter() - started


def nagios(port: int, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run([str(CHECK_HTTP), "-H", "127.0.0.1", "-p", str(port), "-u", "/health",
                        "-s", "healthy"], capture_output=True, check=True)
    return time.perf_counter() - started


def median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def row(results: dict[str, object], key: str, **values: object) -> None:
    results[key] = values
    print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big", type=int, default=10_000)
    args = parser.parse_args()
    repeat = args.repeat
    work = Path(tempfile.mkdtemp(prefix="opsverify-bench-"))
    reports = work / "reports"
    results: dict[str, object] = {"when": datetime.now().isoformat(timespec="seconds"),
                                  "repeat": repeat}
    try:
        fast, port = serve(0.0)
        env = environment(work / "fast-1000.yaml", port, 1000)
        warm_up(env, reports)
        # Round by round, each baseline right after the suite: the machine's speed drifts
        # (by a third within minutes here), and a ratio is of two things timed side by side.
        runs, trivials, raws, nags = [], [], [], []
        for _ in range(repeat):
            runs.append(suite(env, reports))
            trivials.append(trivial_pytest(work, 1000))
            raws.append(raw_loop(port, 1000))
            if CHECK_HTTP.exists():
                nags.append(nagios(port, 1000))
        wall = statistics.median(w for w, _ in runs)
        trivial, raw = statistics.median(trivials), statistics.median(raws)
        row(results, "overhead_1000", suite_s=round(wall, 2), trivial_pytest_s=round(trivial, 2),
            raw_loop_s=round(raw, 2), ratio=round(wall / (trivial + raw), 2), goal="<= 1.3")
        row(results, "rss_1000", peak_mb=round(max(r for _, r in runs)), goal="<= 250")
        if nags:
            nag = statistics.median(nags)
            row(results, "nagios_1000", suite_s=round(wall, 2), check_http_s=round(nag, 2),
                ratio=round(wall / nag, 2), goal="<= 0.8")
        else:
            print("nagios_1000: skipped (apt-get install monitoring-plugins-basic)")

        slow, slow_port = serve(0.020)
        env0 = environment(work / "fast-500.yaml", port, 500)
        env20 = environment(work / "slow-500.yaml", slow_port, 500)
        extra = median(lambda: suite(env20, reports)[0] - suite(env0, reports)[0], repeat)
        ideal = median(lambda: ideal_loop(slow_port, 500) - ideal_loop(port, 500), repeat)
        row(results, "latency_500x20ms", suite_extra_s=round(extra, 2),
            ideal_10_threads_extra_s=round(ideal, 2), ratio=round(extra / ideal, 2),
            goal="<= 1.5")
        slow.shutdown()

        hung, hung_port = hung_socket()
        env_one = environment(work / "hung-1.yaml", hung_port, 1, timeout_s=2)
        env_ten = environment(work / "hung-10.yaml", hung_port, 10, timeout_s=2)
        one = median(lambda: suite(env_one, reports, ok=(1,))[0], repeat)
        ten = median(lambda: suite(env_ten, reports, ok=(1,))[0], repeat)
        row(results, "hung_10_vs_1", ten_s=round(ten, 2), one_s=round(one, 2),
            ratio=round(ten / one, 2), goal="<= 1.5")
        hung.close()

        # An outage: every target refuses connections. Each check is then one ERROR line,
        # which must cost no more than a check that passes.
        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        env_down = environment(work / "down-1000.yaml", refused.getsockname()[1], 1000)
        down = median(lambda: suite(env_down, reports, ok=(1,))[0], repeat)
        row(results, "refused_1000", suite_s=round(down, 2), healthy_s=round(wall, 2),
            ratio=round(down / wall, 2), goal="<= 1.5")
        refused.close()

        if args.big:
            env_big = environment(work / f"fast-{args.big}.yaml", port, args.big)
            big_wall, big_rss = suite(env_big, reports)
            row(results, f"targets_{args.big}", wall_s=round(big_wall, 2),
                peak_mb=round(big_rss), per_check_ms=round(big_wall / args.big * 1000, 2))
        fast.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{datetime.now():%Y%m%d-%H%M%S}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
