"""Webhook deliveries: signed JSON POSTs, sent from threads of their own, retried with backoff.

Tasks never wait for a webhook: `WebhookSender.send` only queues. Each delivery is
signed as Stripe does: HMAC-SHA256, key SCOUT_WEBHOOK_SECRET, over
``<X-Scout-Timestamp>.<exact body bytes>`` (`X-Scout-Signature: sha256=<hex>`), so a
receiver that rejects old timestamps cannot be fed a recorded call again; tried up to
`attempts` times, waiting `backoff`,
2×`backoff`, 4×`backoff`... between tries, on connection errors, timeouts, 408, 429
and 5xx answers. Redirects are not followed and proxies are not used: the URL
checked against SCOUT_WEBHOOK_HOSTS is the one reached.

Deliveries are at least once. The queue lives in memory, but each delivery carries the
id of the log event it tells of (its *mark*), and the notifier (scout/ops.py) stores how
far it has read only up to the lowest mark not yet settled: what a crash or a shutdown
leaves unsent is sent again by the next start, under the same delivery id.
"""
from __future__ import annotations

import collections
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from . import __version__
from .logs import fields

log = logging.getLogger("scout.webhooks")

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


SIGNATURE_TOLERANCE = 300.0  # seconds a receiver should accept a timestamp for (Stripe's default)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Scout-Signature header value for a body sent with X-Scout-Timestamp: timestamp."""
    signed = str(int(timestamp)).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None, timestamp: str | None,
           tolerance: float = SIGNATURE_TOLERANCE, now: float | None = None) -> bool:
    """What a receiver does: a timestamp within `tolerance` seconds of now, and the header
    equal to its own signature of timestamp and body (compared in constant time)."""
    if not header or not timestamp or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, int(timestamp)), header)


def where(url: str) -> str:
    """A URL without its query, fragment or credentials: what may appear in logs."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx answer is then an HTTPError: the delivery fails


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


@dataclass(order=True)
class Delivery:
    due: float
    order: int
    url: str = field(compare=False)
    event: str = field(compare=False)
    body: bytes = field(compare=False)
    id: str = field(compare=False)
    attempt: int = field(default=0, compare=False)
    mark: int | None = field(default=None, compare=False)  # the log event it tells of


def delivery_id(key: str) -> str:
    """A delivery id that is the same every time the same news goes to the same URL, so a
    receiver can drop what a restarted server sends again (deliveries are at least once)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "scout-webhook:" + key))


class WebhookSender:
    """A queue of deliveries and the threads that send them."""

    def __init__(self, secret: str | None, attempts: int = 4, backoff: float = 1.0,
                 timeout: float = 5.0, threads: int = 2,
                 on_settled: Callable[[], None] | None = None) -> None:
        self.secret = secret
        self.on_settled = on_settled  # called after a delivery succeeded or was given up
        self._marks: collections.Counter[int] = collections.Counter()  # log event ids not yet settled
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self._heap: list[Delivery] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._run, name=f"scout-webhooks-{i}", daemon=True)
                         for i in range(threads)]
        self._busy = 0
        self.counts = {"delivered": 0, "retried": 0, "failed": 0}

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, grace: float = 3.0) -> None:
        """Send what is due now for up to `grace` seconds, then drop the rest (logged)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + grace
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            dropped, self._heap = self._heap, []
        for d in dropped:
            later = " (sent again at the next start)" if d.mark is not None else ""
            log.warning("webhook %s to %s not sent before shutdown%s", d.event, where(d.url), later,
                        extra=fields(event="webhook", delivery=d.id, result="dropped"))

    def send(self, url: str, event: str, doc: dict[str, Any], key: str | None = None,
             mark: int | None = None) -> str:
        """Queue one delivery of `doc` (JSON) to url; returns its delivery id. Never blocks.

        ``key`` makes the delivery id stable (see delivery_id); ``mark`` is the id of the
        log event the delivery tells of, kept until it settles (see low_mark)."""
        did = delivery_id(key) if key else str(uuid.uuid4())
        body = json.dumps({**doc, "event": event, "delivery_id": did}, separators=(",", ":")).encode()
        with self._cond:
            if mark is not None:
                self._marks[mark] += 1
            heapq.heappush(self._heap, Delivery(time.monotonic(), next(self._order), url, event, body,
                                                did, mark=mark))
            self._cond.notify()
        return did

    def low_mark(self) -> int | None:
        """The lowest log event id with a delivery not yet settled (sent, or given up)."""
        with self._cond:
            return min(self._marks) if self._marks else None

    def _settled(self, d: Delivery) -> None:
        with self._cond:
            if d.mark is not None:
                self._marks[d.mark] -= 1
                if self._marks[d.mark] <= 0:
                    del self._marks[d.mark]
        if self.on_settled is not None:
            self.on_settled()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._busy

    def _next(self) -> Delivery | None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0].due <= now:
                    self._busy += 1
                    return heapq.heappop(self._heap)
                if self._closing:
                    return None  # retries still waiting for their time are dropped by stop()
                self._cond.wait(self._heap[0].due - now if self._heap else None)

    def _run(self) -> None:
        while True:
            d = self._next()
            if d is None:
                return
            try:
                self._attempt(d)
            except Exception:  # noqa: BLE001 - a sender thread must survive anything
                log.exception("webhook sender failed")
            finally:
                with self._cond:
                    self._busy -= 1

    def _attempt(self, d: Delivery) -> None:
        d.attempt += 1
        headers = {"Content-Type": "application/json", "User-Agent": f"scout/{__version__}",
                   "X-Scout-Event": d.event, "X-Scout-Delivery": d.id}
        if self.secret:  # signed afresh on every attempt: a retry carries its own time
            stamp = int(time.time())
            headers["X-Scout-Timestamp"] = str(stamp)
            headers["X-Scout-Signature"] = sign(self.secret, d.body, stamp)
        req = urllib.request.Request(d.url, data=d.body, headers=headers, method="POST")
        retry, problem = False, ""
        try:
            with _opener.open(req, timeout=self.timeout) as resp:
                resp.read(65536)
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry = status in RETRY_STATUSES
            problem = f"HTTP {status}"
        except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
            status = None
            retry = True
            problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if not problem and 200 <= (status or 0) < 300:
            with self._cond:
                self.counts["delivered"] += 1
            log.info("webhook %s delivered to %s (HTTP %s, attempt %d)", d.event, where(d.url), status,
                     d.attempt, extra=fields(event="webhook", delivery=d.id, result="delivered",
                                             status=status, attempt=d.attempt))
            self._settled(d)
            return
        problem = problem or f"HTTP {status}"
        if retry and d.attempt < self.attempts:
            delay = self.backoff * 2 ** (d.attempt - 1)
            with self._cond:
                self.counts["retried"] += 1
                if not self._closing:
                    d.due = time.monotonic() + delay
                    heapq.heappush(self._heap, d)
                    self._cond.notify()
            log.warning("webhook %s to %s failed (%s); retrying in %gs", d.event, where(d.url), problem,
                        delay, extra=fields(event="webhook", delivery=d.id, result="retry",
                                            attempt=d.attempt))
            return
        with self._cond:
            self.counts["failed"] += 1
        log.warning("webhook %s to %s failed (%s) after %d attempt(s); giving up", d.event, where(d.url),
                    problem, d.attempt, extra=fields(event="webhook", delivery=d.id, result="failed",
                                                     attempt=d.attempt))
        self._settled(d)
