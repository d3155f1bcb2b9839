"""Host and Origin checks, and the security headers every response carries.

DNS rebinding: a page on evil.example can re-point its own name at 127.0.0.1 and then talk to a keyless Ember
as if same-origin, but its requests still carry `Host: evil.example`. So the server answers only to the
loopback names (`localhost`, `*.localhost`, 127.0.0.0/8, ::1), its own bind address and `server.allowed_hosts`
(421 otherwise, as the MCP SDK does). `server.allowed_hosts = ["*"]` turns the check off, for a server behind
a proxy that checks hosts itself.

CSRF: a foreign page can still make a browser POST a form (multipart uploads are "simple" requests, sent
without a CORS preflight). A state-changing request (POST, PUT, PATCH, DELETE) whose `Origin` is not the
server's own (the origin the Host header names) nor one of `server.allowed_origins`, or whose
`Sec-Fetch-Site` says cross-site, is refused with 403. Clients that are not browsers (curl, the OpenAI SDK)
send neither header and are not affected. With API keys the browser cannot attach the key to such a request
anyway; the check stays on.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from ember.platform.auth import is_loopback  # the one loopback rule (bind addresses and Host names)

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# the chat page loads only its own script and stylesheet and talks only to this server
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
NOSNIFF = (b"x-content-type-options", b"nosniff")


def split_host(value: str) -> tuple[str, int | None]:
    """'Example.COM:8000' -> ('example.com', 8000); '[::1]:80' -> ('::1', 80). A bad port gives ('', None)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if port and not port.isdigit():
        return "", None
    return host.rstrip("."), int(port) if port else None




class Guard:
    """Decides, from a request's method and headers, whether the server may answer it."""

    def __init__(self, bind_host: str, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()) -> None:
        self.any_host = "*" in allowed_hosts
        self.hosts = {split_host(h)[0] for h in allowed_hosts if h != "*"}
        bind = split_host(bind_host)[0]
        if bind not in ("", "0.0.0.0", "::"):  # a wildcard bind address is not a name clients use
            self.hosts.add(bind)
        self.origins = {o.strip().rstrip("/").lower() for o in allowed_origins}

    def host_ok(self, host_header: str | None) -> bool:
        if self.any_host:
            return True
        if not host_header:
            return False  # HTTP/1.1 requires Host; uvicorn passes what the client sent
        host, _ = split_host(host_header)
        return bool(host) and (is_loopback(host) or host in self.hosts)

    def origin_ok(self, method: str, host_header: str | None, origin: str | None, fetch_site: str | None) -> bool:
        if method not in STATE_CHANGING:
            return True
        if fetch_site is not None and fetch_site.lower() == "cross-site":
            return False
        if origin is None:
            return True  # not a browser (browsers send Origin with every POST)
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or not host_header:
            return False  # "null" (a sandboxed frame, a file:// page) or garbage
        (o_host, o_port), (h_host, h_port) = split_host(parts.netloc), split_host(host_header)
        return bool(o_host) and o_host == h_host and _port(parts.scheme, o_port) == _port(parts.scheme, h_port)


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)
