"""The explorer's HTTP server: the page, the JSON API, every error as JSON."""

import collections
import http.server
import json
import os
import urllib.parse

from hyperrecon_jax.explorer.request_params import BadRequest
from hyperrecon_jax.explorer.request_params import shown
from hyperrecon_jax.explorer.session import Explorer

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# Seconds a connection may stall on one socket operation (the request line,
# a header, a write) before it is closed: a client that sends nothing, or
# bytes that are not HTTP without a line end, holds a server thread no longer.
REQUEST_TIMEOUT_S = 5.0
MAX_MESSAGE = 200  # characters of a base-class error message (it may quote the request line)
MAX_DRAINED = 1 << 20  # bytes of an unwanted request body read before answering 405
# The parameters of each API path: any other is a 400, not silently ignored.
PARAMS = {"/api/info": (), "/api/reconstruct": ("slice", "lam", "coeffs"),
          "/api/curve": ("slice",),
          "/api/download": ("slice", "lam", "coeffs", "format", "kind")}


# Every printable ASCII character: only bytes beyond ASCII (and controls) are quoted.
_ASCII_PRINTABLE = "".join(map(chr, range(0x21, 0x7F)))


def _percent_encoded(path: str) -> str:
  """The request target with raw bytes beyond ASCII percent-encoded.

  http.server decodes the request line as Latin-1; a client that sends UTF-8
  unencoded (curl with a literal '１') would otherwise be answered about the
  Latin-1 reading of its bytes. Percent-encoded, they decode as UTF-8 like
  any other query.
  """
  return urllib.parse.quote(path.encode("latin-1"), safe=_ASCII_PRINTABLE)


class Handler(http.server.BaseHTTPRequestHandler):
  """Maps paths to `Explorer` methods; every error is JSON, never a traceback or HTML."""

  explorer: Explorer = None  # set by make_server on a subclass
  server_version = "hyperrecon-explorer/1"
  timeout = REQUEST_TIMEOUT_S  # socketserver sets it on every connection's socket
  STATIC = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js"}

  def log_message(self, format, *args):  # noqa: A002 - the base class's name
    pass  # one line per slider move would drown the terminal

  def __getattr__(self, name):
    # The base class looks up ``do_<METHOD>`` and answers an HTML 501 where
    # there is none: every method but GET gets the JSON 405 instead.
    if name.startswith("do_"):
      return self._not_allowed
    raise AttributeError(name)

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

  def send_error(self, code, message=None, explain=None, headers=()):
    """The base class's errors (a bad request line, 414, 431, …) and ours, as JSON.

    Args:
      code: the HTTP status.
      message: what went wrong (default: the status's description); cut to
        `MAX_MESSAGE` characters, since the base class quotes request lines.
      explain: ignored (the base class's longer HTML text).
      headers: more (name, value) headers, e.g. ``Allow``.
    """
    del explain
    short, long = self.responses.get(code, ("Error", ""))
    text = str(message) if message else f"{short}: {long}".rstrip(": ")
    if len(text) > MAX_MESSAGE:
      text = text[:MAX_MESSAGE] + "…"
    body = json.dumps({"error": text}).encode()
    self.close_connection = True  # the rest of the request may be unread
    if self.request_version == "HTTP/0.9":
      # The base class takes a request line it cannot read for HTTP/0.9,
      # whose answers have no status line and no headers: answer in 1.0.
      self.request_version = "HTTP/1.0"
    self.send_response(code, short)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Connection", "close")
    for k, v in headers:
      self.send_header(k, v)
    self.end_headers()
    if self.command != "HEAD":  # a HEAD answer has headers only
      self.wfile.write(body)

  def _not_allowed(self):
    try:  # the client may wait to finish sending its body before it reads the answer
      length = int(self.headers.get("Content-Length") or 0)
      if 0 < length <= MAX_DRAINED:
        self.rfile.read(length)
    except (ValueError, OSError):
      pass
    self.send_error(405, f"method {shown(self.command)} is not allowed: the explorer answers "
                    "GET only", headers=[("Allow", "GET")])

  def do_GET(self):  # noqa: N802 - http.server's name
    url = urllib.parse.urlsplit(_percent_encoded(self.path))
    try:
      self._route(url.path, self._query(url.path, url.query))
    except BadRequest as e:
      self._json(400, {"error": str(e)})
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
      self.close_connection = True
    except Exception as e:  # noqa: BLE001 - the server must keep serving
      text = f"internal error: {type(e).__name__}: {e}"  # may quote a parameter: cut short
      self._json(500, {"error": text[:MAX_MESSAGE] + "…" * (len(text) > MAX_MESSAGE)})

  def _query(self, path, text):
    """The query's parameters as {name: value}; a repeated or unknown one is a 400."""
    pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
    counts = collections.Counter(name for name, _ in pairs)
    for name, count in counts.items():
      if count > 1:  # which of them was meant is anyone's guess
        raise BadRequest(f"parameter {shown(name)} is given {count} times: give it once")
    if path in PARAMS:
      unknown = [name for name in counts if name not in PARAMS[path]]
      if unknown:
        takes = ", ".join(PARAMS[path]) or "no parameters"
        raise BadRequest(f"unknown parameter {shown(unknown[0])} for {path} (it takes "
                         f"{takes})")
    return dict(pairs)

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
      self._json(200, ex.reconstruct(need("slice"), query.get("lam"), query.get("coeffs")))
    elif path == "/api/curve":
      self._json(200, ex.curve(need("slice")))
    elif path == "/api/download":
      body, content_type, filename = ex.download(
          need("slice"), query.get("lam"), query.get("format", "png"),
          query.get("kind", "recon"), coeffs=query.get("coeffs"))
      self._send(200, body, content_type,
                 [("Content-Disposition", f'attachment; filename="{filename}"')])
    else:
      self._json(404, {"error": f"unknown path {shown(path)}; the API is /api/info, "
                       "/api/reconstruct, /api/curve, /api/download"})


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8765, *,
                timeout: float = REQUEST_TIMEOUT_S):
  """A threading HTTP server of the explorer (call ``serve_forever()``).

  Args:
    explorer: the `Explorer`.
    host: the address to bind (127.0.0.1: this machine only).
    port: the port; 0 picks a free one (``server.server_address[1]``).
    timeout: seconds a connection may stall on one socket operation
      (`REQUEST_TIMEOUT_S`).

  Returns:
    A `http.server.ThreadingHTTPServer`.

  Raises:
    OSError: the address cannot be bound (e.g. ``errno.EADDRINUSE``).
  """
  handler = type("ExplorerHandler", (Handler,), {"explorer": explorer, "timeout": timeout})
  # Python's default listen queue of 5 resets the connections of a burst of
  # clients (29 of 100 at once); 128 queues them.
  server_class = type("ExplorerServer", (http.server.ThreadingHTTPServer,),
                      {"request_queue_size": 128})
  server = server_class((host, port), handler)
  server.daemon_threads = True
  return server
