"""A weights mirror on loopback: serves files with Range support, counts requests, and can misbehave on
request (cut a response short, trickle it, answer an HTTP error)."""

from __future__ import annotations

import http.server
import threading
import time

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class Mirror:
    """Serves ``files`` with Range support; counts requests; can cut a response short or corrupt it."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None  # send only this many bytes of the next response
        self.trickle: tuple[int, float] | None = None  # (bytes, seconds): send that many bytes per pause
        self.status: dict[str, int] = {}  # answer these names with this HTTP error status
        self.head_trickle: float | None = None  # send the status line and headers one byte per this many seconds
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                data = outer.files.get(name)
                if name in outer.status:
                    self.send_error(outer.status[name])
                    return
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):  # what real servers answer to a Range past the end
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                if outer.head_trickle is not None:
                    self.trickle_head(len(body))
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_after is not None:
                    body, outer.cut_after = body[: outer.cut_after], None
                if outer.trickle is None:
                    self.wfile.write(body)
                    return
                step, pause = outer.trickle
                try:
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i : i + step])
                        self.wfile.flush()
                        time.sleep(pause)
                except OSError:  # the client gave up (what the tests want)
                    pass

            def trickle_head(self, length: int) -> None:
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nX-Pad: {'x' * 200}\r\n\r\n".encode()
                try:
                    for i in range(len(head)):
                        self.wfile.write(head[i : i + 1])
                        self.wfile.flush()
                        time.sleep(outer.head_trickle)
                except OSError:  # the client gave up (what the tests want)
                    pass
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
