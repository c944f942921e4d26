"""The explorer's HTTP server: the page, the JSON API, 400/404 JSON errors."""

import http.server
import json
import os
import urllib.parse

from hyperrecon_jax.explorer.session import BadRequest
from hyperrecon_jax.explorer.session import Explorer

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class Handler(http.server.BaseHTTPRequestHandler):
  """Maps paths to `Explorer` methods; bad parameters to 400 JSON, never a traceback."""

  explorer: Explorer = None  # set by make_server on a subclass
  server_version = "hyperrecon-explorer/1"
  STATIC = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js"}

  def log_message(self, format, *args):  # noqa: A002 - the base class's name
    pass  # one line per slider move would drown the terminal

  def _send(self, code, body: bytes, content_type, headers=()):
    self.send_response(code)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    for k, v in headers:
      self.send_header(k, v)
    self.end_headers()
    self.wfile.write(body)

  def _json(self, code, obj):
    self._send(code, json.dumps(obj, allow_nan=False).encode(), "application/json")

  def do_GET(self):  # noqa: N802 - http.server's name
    url = urllib.parse.urlsplit(self.path)
    try:
      query = {k: v[-1] for k, v in urllib.parse.parse_qs(
          url.query, keep_blank_values=True).items()}
      self._route(url.path, query)
    except BadRequest as e:
      self._json(400, {"error": str(e)})
    except (BrokenPipeError, ConnectionResetError):
      pass
    except Exception as e:  # noqa: BLE001 - the server must keep serving
      self._json(500, {"error": f"internal error: {type(e).__name__}: {e}"})

  def _route(self, path, query):
    ex = self.explorer

    def need(name):
      if name not in query:
        raise BadRequest(f"missing parameter {name!r}")
      return query[name]

    if path in self.STATIC:
      with open(os.path.join(PAGE_DIR, self.STATIC[path]), "rb") as f:
        kind = "text/html" if path != "/app.js" else "text/javascript"
        self._send(200, f.read(), kind + "; charset=utf-8")
    elif path == "/favicon.ico":
      self._send(204, b"", "image/x-icon")
    elif path == "/api/info":
      self._json(200, ex.info())
    elif path == "/api/reconstruct":
      self._json(200, ex.reconstruct(need("slice"), need("lam")))
    elif path == "/api/curve":
      self._json(200, ex.curve(need("slice")))
    elif path == "/api/download":
      body, content_type, filename = ex.download(
          need("slice"), query.get("lam"), query.get("format", "png"),
          query.get("kind", "recon"))
      self._send(200, body, content_type,
                 [("Content-Disposition", f'attachment; filename="{filename}"')])
    else:
      self._json(404, {"error": f"unknown path {path!r}; the API is /api/info, "
                       "/api/reconstruct, /api/curve, /api/download"})


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8765):
  """A threading HTTP server of the explorer (call ``serve_forever()``).

  Args:
    explorer: the `Explorer`.
    host: the address to bind (127.0.0.1: this machine only).
    port: the port; 0 picks a free one (``server.server_address[1]``).

  Returns:
    A `http.server.ThreadingHTTPServer`.
  """
  handler = type("ExplorerHandler", (Handler,), {"explorer": explorer})
  server = http.server.ThreadingHTTPServer((host, port), handler)
  server.daemon_threads = True
  return server
