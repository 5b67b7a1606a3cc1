"""A stand-in for ``jupyter-lab`` that answers every GET with 200 (standard library only).

Used where hundreds of real JupyterLab processes would not fit in memory: the launcher finds
it as the ``jupyter-lab`` of a small environment (see :mod:`benchmarks.stack`), so the job,
the launcher, the readiness report and the operator's HTTP check are all the real ones; only
the app is ~10 MB instead of ~100 MB. Accepts the arguments the launcher passes
(``--ip=``, ``--port=``, ``--ServerApp.base_url=``) and ignores the rest.
"""

from __future__ import annotations

import http.server
import sys


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"started": "minimal"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def main(argv: list[str]) -> None:
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    server = http.server.ThreadingHTTPServer((opts.get("ip", "127.0.0.1"),
                                              int(opts.get("port", "8888"))), _Handler)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
