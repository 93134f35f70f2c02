"""An HTTP proxy in front of the moto S3 server that answers chosen requests with S3 5xx errors.

Real botocore/s3fs retries and error translation see real ``503 SlowDown`` / ``500 InternalError``
replies; ``proxy.fail`` decides per request (method, path) and can be switched off to "fix" S3.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_ERROR = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected fault'
          '</Message><RequestId>fault</RequestId></Error>')


class FaultyS3:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.fail: Callable[[str, str], int | None] = lambda method, path: None  # status or None
        self.injected = 0
        self.lock = threading.Lock()


def _handler(state: FaultyS3):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            status = state.fail(self.command, self.path)
            if status:
                with state.lock:
                    state.injected += 1
                code = {500: "InternalError", 503: "SlowDown"}.get(status, "ServiceUnavailable")
                payload = _ERROR.format(code=code).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(state.upstream.hostname, state.upstream.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding")}
            if body is None and self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked()
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        def _read_chunked(self) -> bytes:
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy

    return Handler


@contextmanager
def faulty_s3(upstream: str):
    """``(endpoint, state)``: point s3fs at ``endpoint``; set ``state.fail`` to inject errors."""
    state = FaultyS3(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
