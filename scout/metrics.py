"""Prometheus metrics for one Scout app, in a registry of its own (never the global one).

Counts of tasks come from the store at scrape time, so they are right whichever
process wrote them; the task duration histogram is fed by the status follower as
tasks finish while this server runs.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .store import StoreError
from .vocab import ACTIVE, PENDING, STATUSES

if TYPE_CHECKING:
    from .state import Scout

log = logging.getLogger("scout.metrics")

DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))


class ScoutCollector(Collector):
    """Gauges and counters read at scrape time from the store, supervisor, watcher and ops."""

    def __init__(self, state: "Scout", extra: Callable[[], dict[str, Any]]) -> None:
        self.state = state
        self.extra = extra  # webhook and retention counts from scout.ops

    def collect(self) -> Iterator[Metric]:
        s = self.state
        ok = 1
        try:
            counts = s.store.count_by_status()
            written = s.store.events_written()
            size = s.store.size_bytes()
        except StoreError as exc:
            log.warning("metrics: %s", exc)
            counts, written, size, ok = None, None, None, 0
        yield GaugeMetricFamily("scout_database_up", "1 if the database could be read for this scrape", value=ok)
        if counts is not None:
            by_status = GaugeMetricFamily("scout_tasks", "Tasks in the log by status", labels=["status"])
            for status in STATUSES:
                by_status.add_metric([status], counts.get(status, 0))
            yield by_status
            yield GaugeMetricFamily("scout_tasks_running",
                                    "Tasks running or waiting for an approval",
                                    value=sum(counts.get(x, 0) for x in ACTIVE))
            yield GaugeMetricFamily("scout_tasks_pending", "Tasks waiting for a worker",
                                    value=counts.get(PENDING, 0))
            yield CounterMetricFamily("scout_events_written", "Events ever written to the log "
                                      "(ids are never reused, so deletes do not lower it)", value=written)
            yield GaugeMetricFamily("scout_database_size_bytes", "Database file size with its WAL",
                                    value=size)
        info = GaugeMetricFamily("scout_node_info", "This server as a node of the log (always 1): its id, "
                                 "whether the log is shared with other nodes", labels=["node", "shared"])
        info.add_metric([s.settings.node_id, str(s.store.shared).lower()], 1)
        yield info
        yield GaugeMetricFamily("scout_workers_active", "Task processes this server (node) supervises",
                                value=s.supervisor.running_count())
        yield GaugeMetricFamily("scout_workers_max", "SCOUT_MAX_WORKERS", value=s.settings.max_workers)
        yield GaugeMetricFamily("scout_warm_sessions", "Idle warm Claude Code processes (SCOUT_MAX_WARM caps)",
                                value=s.supervisor.warm_count())
        yield GaugeMetricFamily("scout_sse_streams", "Open SSE streams", value=s.watcher.streams)
        extra = self.extra()
        hooks = CounterMetricFamily("scout_webhook_deliveries", "Webhook delivery attempts by result "
                                    "(delivered, retried, failed)", labels=["result"])
        for result, n in sorted(extra.get("webhooks", {}).items()):
            hooks.add_metric([result], n)
        yield hooks
        yield GaugeMetricFamily("scout_webhook_queue", "Webhook deliveries queued or being sent",
                                value=extra.get("webhook_queue", 0))
        pruned = CounterMetricFamily("scout_retention_deleted", "What retention deleted while this "
                                     "server ran", labels=["what"])
        for what in ("tasks", "events"):
            pruned.add_metric([what], extra.get("pruned", {}).get(what, 0))
        yield pruned


class Metrics:
    """The app's registry and the metrics fed from inside the server."""

    def __init__(self, state: "Scout", extra: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ScoutCollector(state, extra))
        self.task_duration = Histogram(
            "scout_task_duration_seconds",
            "Seconds from a task's start to its end (0 if it never started), observed as it finishes",
            ["status"], buckets=DURATION_BUCKETS, registry=self.registry)

    def observe_finished(self, status: str, seconds: float) -> None:
        self.task_duration.labels(status=status).observe(max(0.0, seconds))
