"""The http target's GETs on ``http.client`` (opsverify/targets/http_wire.py) keep what they
had on requests: credentials from ~/.netrc and the URL, the session's headers and cookies,
decoded gzip and deflate answers, kept-alive connections, proxies; and they read the
process environment once, when the client is made, never from the probe pool's threads."""

from __future__ import annotations

import gzip
import os
import socket
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opsverify.errors import TargetUnavailable
from opsverify.targets.http import HttpClient, HttpTarget
from tests.conftest import send_json

BODY = b'{"status": "healthy"}'


class Recorded(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as most servers
    server: Recorded

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "port": self.client_address[1],
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
        body, extra = BODY, {}
        if self.path == "/gzip":
            body, extra = gzip.compress(BODY), {"Content-Encoding": "gzip"}
        elif self.path == "/deflate":
            body, extra = zlib.compress(BODY), {"Content-Encoding": "deflate"}
        elif self.path == "/login":
            extra = {"Set-Cookie": "session=s3cr3t; Path=/; HttpOnly"}
        send_json(self, body, headers=extra)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorded]:
    found = Recorded()
    yield found
    found.shutdown()
    found.server_close()


def client(url: str) -> HttpClient:
    return HttpClient("api", HttpTarget(type="http", url=url), 2.0)


def test_credentials_come_from_netrc_first_then_from_the_url(
        server: Recorded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login ops password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    port = server.server_address[1]
    client(f"http://u:from-url@127.0.0.1:{port}").get("/health")
    monkeypatch.delenv("NETRC")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc there
    client(f"http://u:from%20url@127.0.0.1:{port}").get("/health")
    client(server.url).get("/health")
    auth = [seen["headers"].get("authorization") for seen in server.seen]
    # requests' order: ~/.netrc's entry for the host wins over the URL's user:password.
    assert auth == ["Basic b3BzOmZyb20tbmV0cmM=",  # ops:from-netrc
                    "Basic dTpmcm9tIHVybA==",  # u:from url (unquoted)
                    None]
    assert {seen["headers"]["user-agent"] for seen in server.seen} == {"opsverify/0.1"}


def test_cookies_a_target_sets_are_sent_back_and_never_anonymously(server: Recorded) -> None:
    api = client(server.url)
    login = api.get("/login")
    assert login.set_cookies == ("session=s3cr3t; Path=/; HttpOnly",)
    api.get("/health")
    api.get_anonymous("/health")
    cookies = [seen["headers"].get("cookie") for seen in server.seen]
    assert cookies == [None, "session=s3cr3t", None]


def test_gzip_and_deflate_answers_are_decoded(server: Recorded) -> None:
    api = client(server.url)
    for path in ("/gzip", "/deflate"):
        answer = api.get(path)
        assert answer.body == BODY
        assert answer.json() == {"status": "healthy"}
    assert server.seen[0]["headers"]["accept-encoding"] == "gzip, deflate"


def test_gets_of_one_client_share_a_kept_alive_connection(server: Recorded) -> None:
    api = client(server.url)
    for _ in range(5):
        api.get("/health")
    assert len({seen["port"] for seen in server.seen}) == 1
    api.close()
    api.get("/health")  # after close: a connection of its own, again
    assert len({seen["port"] for seen in server.seen}) == 2


def test_a_kept_alive_connection_the_server_dropped_is_tried_once_anew() -> None:
    """A server that answers once and then closes the idle connection (its keep-alive
    timeout, here at once): the next GET finds it dead and sends again on a new one."""
    listener = socket.create_server(("127.0.0.1", 0))
    served: list[int] = []

    def serve() -> None:
        while len(served) < 2:
            conn, address = listener.accept()
            conn.recv(65536)
            served.append(address[1])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()  # without Connection: close, as a timed-out keep-alive does

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    api = client(f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        assert api.get("/").body == b"ok"
        assert api.get("/").body == b"ok"
        assert len(set(served)) == 2
    finally:
        listener.close()


def test_a_proxy_in_the_environment_carries_the_gets(
        server: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``http_proxy`` set the GET goes to the proxy (requests carries it); the variable
    is read when the client is made: set later, it changes nothing."""
    proxy = Recorded()  # answers the proxied request itself, as a caching proxy may
    try:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        client("http://service.invalid:8080").get("/health")
        assert proxy.seen[0]["path"] == "http://service.invalid:8080/health"
        monkeypatch.delenv("http_proxy")
        direct = client(server.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        direct.get("/health")
        assert [s["path"] for s in server.seen] == ["/health"]
        assert len(proxy.seen) == 1
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_gets_from_many_threads_read_nothing_of_a_changing_environment(
        server: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest sets and deletes PYTEST_CURRENT_TEST while the pool's threads GET: requests
    scanned os.environ on every request and now and then raised KeyError out of the scan."""
    clients = [client(server.url) for _ in range(8)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def get_many(api: HttpClient) -> None:
        try:
            for _ in range(50):
                api.get("/health")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    def churn() -> None:
        while not stop.is_set():
            os.environ["OPSVERIFY_CHURN"] = "1"
            del os.environ["OPSVERIFY_CHURN"]

    # Switch threads often, as a busy run does, so the scans meet the churn.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    threads = [threading.Thread(target=get_many, args=(api,)) for api in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    churner.join()
    sys.setswitchinterval(interval)
    assert errors == []
    assert len(server.seen) == 400


def test_a_get_runs_on_the_callers_thread(server: Recorded,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole-answer deadline needs no second thread: a GET never hands itself to
    :func:`opsverify.targets.base.run_within`'s threads."""
    from opsverify.targets import base

    def refuse(task: object) -> None:
        raise AssertionError("a GET went to another thread")

    monkeypatch.setattr(base._CALLS, "run", refuse)
    api = client(server.url)
    assert all(api.get("/health").status == 200 for _ in range(5))


def test_a_refused_connection_and_a_bad_answer_are_one_line_each() -> None:
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    try:
        with pytest.raises(TargetUnavailable) as caught:
            client(f"http://127.0.0.1:{port}").get("/health")
        assert str(caught.value) == f"api (http://127.0.0.1:{port}): cannot connect: " \
                                    "connection refused"
    finally:
        refused.close()
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n"
                     b"\r\nxyz")
        conn.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    try:
        with pytest.raises(TargetUnavailable, match=r"answer not decodable "
                                                    r"\(Content-Encoding: gzip\)$"):
            client(f"http://127.0.0.1:{listener.getsockname()[1]}").get("/health")
    finally:
        listener.close()


def test_a_missing_ca_bundle_from_the_environment_is_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """REQUESTS_CA_BUNDLE naming no file, with ``verify_tls: true``: the line requests gave
    ("not a readable CA bundle"), before anything is contacted."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/corporate-ca.pem")
    with pytest.raises(TargetUnavailable, match=r"verify_tls True is not a readable CA "
                                                r"bundle$"):
        client("https://127.0.0.1:9").get("/health")
