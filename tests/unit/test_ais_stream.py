"""An object read as a stream of chunks (`Ais.stream_chunks`), against a loopback stand-in for AIS: a whole
object arrives whole, an absent one is MissingObject, and a body cut short is an error, never a shorter
stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import Ais, AisUnavailable, MissingObject

BODY = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        if name == "missing":
            message = b'{"message":"ais://b/missing does not exist","method":"GET","status":404}'
            self.send_response(404)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(BODY if name == "whole" else BODY[: len(BODY) // 2])  # "cut": the target went away
        self.close_connection = True


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_whole_object_arrives_whole_in_chunks_of_the_size_asked(endpoint: str) -> None:
    chunks = list(Ais(endpoint, attempts=1).stream_chunks("b", "whole", chunk_size=1 << 20))
    assert b"".join(chunks) == BODY
    assert len(chunks) == 4 and all(len(c) == 1 << 20 for c in chunks[:-1])


def test_an_absent_object_is_missing(endpoint: str) -> None:
    with pytest.raises(MissingObject, match="ais://b/missing not found"):
        list(Ais(endpoint, attempts=1).stream_chunks("b", "missing"))


def test_a_body_cut_short_is_an_outage_not_a_shorter_object(endpoint: str) -> None:
    read = 0
    with pytest.raises(AisUnavailable):
        for chunk in Ais(endpoint, attempts=1).stream_chunks("b", "cut", chunk_size=1 << 16):
            read += len(chunk)
    assert read < len(BODY)
