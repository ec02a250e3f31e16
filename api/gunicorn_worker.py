"""gunicorn's gevent worker, with the errors gunicorn answers itself in OpenAI's envelope.

gunicorn refuses some requests before Flask sees them: a request line over 4094 bytes (414),
too many or too large headers (431), a malformed header, a NUL in one, a bad Content-Length
(400). It writes those as small HTML pages with ``gunicorn.util.write_error``; this worker
class points that function at one that writes the JSON error body every other resq error
has, for the process it runs in. Use it as ``--worker-class api.gunicorn_worker.Worker``.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

CODES = {400: "invalid_request", 403: "forbidden", 414: "uri_too_long",
         431: "request_header_fields_too_large", 417: "expectation_failed",
         500: "server_error", 501: "not_implemented"}  # fmt: skip


def error_bytes(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 response carrying the error envelope; the connection closes."""
    body = json.dumps(
        {
            "error": {
                "message": message or reason,
                "type": "invalid_request_error" if status < 500 else "server_error",
                "param": None,
                "code": CODES.get(status, "invalid_request"),
            }
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    util.write_nonblock(sock, error_bytes(status_int, reason, mesg))


class Worker(GeventWorker):
    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
