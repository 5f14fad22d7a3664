"""An HTTP service on 127.0.0.1 (a free port) served from a thread: the base of the fake metadata service and the
fake Kubernetes API server. A subclass answers each request in ``answer``; every request is kept in ``requests``."""

from __future__ import annotations

import abc
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LocalHttpServer(abc.ABC):
    content_type = "text/plain"

    def __init__(self) -> None:
        self.requests: list[str] = []  # "METHOD /path", in order
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Any:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @abc.abstractmethod
    def answer(self, method: str, path: str, headers: Any) -> tuple[int, str]:
        """(status, body) for one request."""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                service.requests.append(f"{method} {self.path}")
                status, body = service.answer(method, self.path, self.headers)
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", service.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
