"""Large PUTs go to the object's target directly (`Ais._put_direct`), against a loopback stand-in for AIS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import DIRECT_PUT_BYTES, Ais
from sharded_dataset_operator.clients.ais_errors import AccessDenied


class Cluster:
    """A proxy that redirects every object PUT to its target (`/t/...`) without reading the body, as AIS does."""

    def __init__(self) -> None:
        self.proxy_bodies: list[int] = []  # Content-Length of each PUT the proxy got
        self.stored: dict[str, bytes] = {}
        self.refuse = False
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path.startswith("/v1/objects/"):
                    cluster.proxy_bodies.append(length)
                    self.send_response(307)
                    self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/t{self.path}")
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                body = self.rfile.read(length)
                if cluster.refuse:
                    message = b'{"message":"token required","method":"PUT"}'
                    self.send_response(401)
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                cluster.stored[self.path.split("?")[0]] = body
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    thread = threading.Thread(target=c.server.serve_forever, daemon=True)
    thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


def test_a_large_body_goes_to_the_target_only_and_a_small_one_through_the_sdk(cluster: Cluster) -> None:
    ais = Ais(cluster.endpoint, attempts=1)
    big = bytes(range(256)) * (DIRECT_PUT_BYTES // 256 + 1)
    ais.put("out", "runs/a b.txt", big)
    assert cluster.proxy_bodies == [0]  # the proxy was asked for the target without the body
    assert cluster.stored == {"/t/v1/objects/out/runs/a%20b.txt": big}
    ais.put("out", "small", b"x" * 1000)
    assert cluster.proxy_bodies == [0, 1000]  # the SDK's way: the body to the proxy, then to the target
    assert cluster.stored["/t/v1/objects/out/small"] == b"x" * 1000


def test_a_target_that_refuses_a_direct_put_is_the_same_error_as_through_the_sdk(cluster: Cluster) -> None:
    cluster.refuse = True
    ais = Ais(cluster.endpoint, attempts=1)
    with pytest.raises(AccessDenied, match="token required"):
        ais.put("out", "big", b"y" * DIRECT_PUT_BYTES)
    with pytest.raises(AccessDenied, match="token required"):
        ais.put("out", "small", b"y")
