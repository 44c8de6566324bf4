"""Who may knock: the Host and Origin rules and the login throttle that the API and the UI share.

A browser on the user's machine is the attacker to keep out. Through DNS rebinding a web
page can reach a loopback port under a foreign name (``Host: evil.example``), and any page
can POST to it (a "simple" request needs no preflight). So both servers answer 403 to a
``Host`` they do not serve, and to a state-changing request (POST, PUT, PATCH, DELETE,
with or without a body) whose ``Origin`` is neither their own nor listed in
SCOUT_CORS_ORIGINS. Requests without an ``Origin`` (curl, the CLI, the UI's own calls
to the API) pass the Origin check: browsers always send it on cross-origin writes.

Pure functions and one small class, no Flask or Starlette in here, so that the API (a
Flask app) and the UI (a Starlette app under Gradio) apply the same rules.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(value: str) -> str:
    """The name part of a Host header or an address, lower-case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def is_loopback(host: str) -> bool:
    """Is `host` loopback? Names are resolved: every address they stand for must be loopback."""
    name = host_name(host)
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def _machine_names() -> set[str]:
    """This machine's host names and the addresses they resolve to: what a client uses to
    reach a wildcard bind (other names: SCOUT_ALLOWED_HOSTS)."""
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for name in list(names):
        try:
            names.update(str(i[4][0]).split("%")[0].lower() for i in socket.getaddrinfo(name, None))
        except (OSError, UnicodeError):
            continue
    return names


@dataclass(frozen=True)
class HostRules:
    """The Host names a server answers to and the Origins it takes writes from."""

    hosts: frozenset[str]
    any_host: bool = False
    origins: frozenset[str] = frozenset()

    @classmethod
    def build(cls, bound: str, allowed_hosts: list[str], cors_origins: list[str]) -> "HostRules":
        """Loopback names, the bound address (all of the machine's for a wildcard), the extras."""
        hosts = set(LOOPBACK_NAMES) | {host_name(bound)}
        if host_name(bound) in WILDCARDS:
            hosts |= _machine_names()
        extra = {host_name(h) for h in allowed_hosts}
        return cls(frozenset(hosts | extra - {"*"}), "*" in extra,
                   frozenset(o.rstrip("/").lower() for o in cors_origins))

    def host_allowed(self, host_header: str | None) -> bool:
        if self.any_host:
            return True
        if not host_header:
            return False
        name = host_name(host_header)
        return name in self.hosts or _is_127(name)

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        """An absent Origin, the server's own (same host and port as Host), or a listed one."""
        if origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and bool(host_header) \
            and parts.netloc == (host_header or "").strip().lower()

    def refusal(self, method: str, host_header: str | None, origin: str | None) -> "Refusal | None":
        """Why a request must be refused (403), or None."""
        if not self.host_allowed(host_header):
            return Refusal("host_not_allowed", f"Host {host_header!r} is not one this server answers "
                           "to; add it to SCOUT_ALLOWED_HOSTS if it is yours")
        if method.upper() in STATE_CHANGING and not self.origin_allowed(origin, host_header):
            return Refusal("origin_not_allowed", f"Origin {origin!r} may not change anything here; "
                           "add it to SCOUT_CORS_ORIGINS if it is yours")
        return None


@dataclass(frozen=True)
class Refusal:
    """A 403: a stable code and a message for people."""

    code: str
    message: str


def _is_127(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass
class LoginThrottle:
    """Failed logins per client: after `limit` failures within `window` seconds, that client
    waits out the window (429 with Retry-After) before it may try again."""

    limit: int = 5
    window: float = 60.0
    _fails: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait before its next attempt; 0 if it may try now."""
        now = time.monotonic()
        with self._lock:
            fails = [t for t in self._fails.get(client, []) if now - t < self.window]
            self._fails[client] = fails
            if len(fails) < self.limit:
                return 0
            return max(1, int(fails[0] + self.window - now + 1))

    def failed(self, client: str) -> None:
        with self._lock:
            self._fails.setdefault(client, []).append(time.monotonic())
            if len(self._fails) > 10_000:  # forget the oldest clients rather than grow without end
                for key in list(self._fails)[:5000]:
                    del self._fails[key]

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._fails.pop(client, None)
