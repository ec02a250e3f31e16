"""Operational metrics, kept in Redis so every API and worker process, on any machine, adds
to the same numbers; ``GET /metrics`` renders them with prometheus-client (README,
"Monitoring").

Why Redis rather than prometheus-client's multiprocess mode: that mode shares files between
the processes of one machine, while resq's workers and API processes may run on many
machines; a counter in Redis is one number for the whole deployment, whichever process
serves the scrape. Each event costs one pipelined round trip.

Counters and histogram buckets are fields of one hash (``keys.METRICS``); a histogram
observation increments the first bucket its value fits, and the render accumulates them.
Gauges (queue depth, paused queues, open streams, active responses) are read at scrape time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shared import keys
from shared.queue import queue_depth

if TYPE_CHECKING:
    from shared.bus import Command, GroupCommit

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

COUNTERS = {
    "responses_finished": ("Responses that ended, by model and status.", ("model", "status")),
    "tokens": ("Tokens the models read and wrote, by model and kind.", ("model", "kind")),
    "upstream_errors": ("Upstream failures, by provider and code.", ("provider", "code")),
    "webhook_deliveries": ("Webhook delivery attempts, by outcome.", ("outcome",)),
}
HISTOGRAMS = {
    "queue_wait_seconds": "Time from being queued to a worker starting the response.",
    "run_seconds": "Time from a worker starting the response to its end.",
    "time_to_first_token_seconds": "Time from a worker starting the response to its first output.",
}


def _field(name: str, labels: dict[str, str], extra: str = "") -> str:
    return json.dumps([name, labels, extra], separators=(",", ":"), sort_keys=True)


def _bucket(value: float) -> str:
    for le in BUCKETS:
        if value <= le:
            return repr(float(le))
    return "+Inf"


class Recorder:
    """Adds to the shared numbers. Never raises: metrics must not fail a job."""

    def __init__(self, client: redis.Redis, group: GroupCommit | None = None) -> None:
        self.redis = client
        self.group = group  # a worker's: its metrics share pipelines with its events
        self._streams_reset = False

    def _send(self, ops: Iterable[tuple[str, float]]) -> None:
        commands: list[Command] = [
            ("hincrby", (keys.METRICS, f, int(n)), {})
            if float(n).is_integer()
            else ("hincrbyfloat", (keys.METRICS, f, n), {})
            for f, n in ops
        ]
        try:
            if self.group is not None:
                self.group.run(commands)
                return
            pipe = self.redis.pipeline(transaction=False)
            for name, args, _ in commands:
                getattr(pipe, name)(*args)
            pipe.execute()
        except redis.RedisError:
            pass

    @staticmethod
    def _observe(name: str, labels: dict[str, str], value: float) -> list[tuple[str, float]]:
        return [
            (_field(name, labels, _bucket(value)), 1),
            (_field(name, labels, "sum"), value),
            (_field(name, labels, "count"), 1),
        ]

    def finished(
        self,
        *,
        model: str,
        status: str,
        timings: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        ops: list[tuple[str, float]] = [
            (_field("responses_finished", {"model": model, "status": status}), 1)
        ]
        labels = {"model": model}
        for name, key in (
            ("queue_wait_seconds", "queue_wait"),
            ("run_seconds", "run"),
            ("time_to_first_token_seconds", "first_token"),
        ):
            value = (timings or {}).get(key)
            if isinstance(value, (int, float)) and value >= 0:
                ops += self._observe(name, labels, float(value))
        for kind in ("input_tokens", "output_tokens"):
            count = (usage or {}).get(kind)
            if isinstance(count, int) and count:
                ops.append(
                    (
                        _field("tokens", {"model": model, "kind": kind.removesuffix("_tokens")}),
                        count,
                    )
                )
        self._send(ops)

    def upstream_error(self, provider: str, code: str) -> None:
        self._send([(_field("upstream_errors", {"provider": provider, "code": code}), 1)])

    def webhook(self, outcome: str) -> None:
        self._send([(_field("webhook_deliveries", {"outcome": outcome}), 1)])

    def stream_opened(self, delta: int = 1) -> None:
        """Open SSE streams, counted per API process (``host:pid``). A process's first
        stream clears what an earlier process with the same name may have left."""
        with contextlib.suppress(redis.RedisError):
            pipe = self.redis.pipeline(transaction=False)
            if not self._streams_reset:
                pipe.hdel(keys.OPEN_STREAMS, process_name())
                self._streams_reset = True
            pipe.hincrby(keys.OPEN_STREAMS, process_name(), delta)
            pipe.execute()


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Gauges:
    """What the scrape reads besides the hash."""

    queue_depths: Callable[[], dict[str, int]]
    paused: Callable[[], dict[str, bool]]
    active: Callable[[], dict[str, int]]  # status → count (queued, in_progress)
    # tenant → {"queued", "running"}; and refusals by (tenant, limit)
    tenants: Callable[[], dict[str, dict[str, int]]] = dict
    rate_limited: Callable[[], dict[tuple[str, str], int]] = dict


class ResqCollector(Collector):
    def __init__(self, client: redis.Redis, gauges: Gauges) -> None:
        self.redis = client
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        raw: dict[bytes, bytes] = self.redis.hgetall(keys.METRICS)  # type: ignore[assignment]
        parsed: list[tuple[str, dict[str, str], str, float]] = []
        for field, amount in raw.items():
            name, labels, extra = json.loads(field)
            parsed.append((name, labels, extra, float(amount)))
        for name, (doc, label_names) in COUNTERS.items():
            counter = CounterMetricFamily(f"resq_{name}", doc, labels=list(label_names))
            for metric, labels, _extra, value in parsed:
                if metric == name:
                    counter.add_metric([labels.get(n, "") for n in label_names], value)
            yield counter
        for name, doc in HISTOGRAMS.items():
            histogram = HistogramMetricFamily(f"resq_{name}", doc, labels=["model"])
            series: dict[str, dict[str, float]] = {}
            for metric, labels, extra, value in parsed:
                if metric == name:
                    series.setdefault(labels.get("model", ""), {})[extra] = value
            for model, values in sorted(series.items()):
                running = 0.0
                buckets = []
                for le in BUCKETS:
                    running += values.get(repr(float(le)), 0.0)
                    buckets.append((repr(float(le)), running))
                buckets.append(("+Inf", values.get("count", 0.0)))
                histogram.add_metric([model], buckets, values.get("sum", 0.0))
            yield histogram
        depth = GaugeMetricFamily(
            "resq_queue_depth", "Messages waiting in each queue.", labels=["queue"]
        )
        for queue, count in self.gauges.queue_depths().items():
            depth.add_metric([queue], count)
        yield depth
        paused = GaugeMetricFamily(
            "resq_queue_paused", "1 while a queue is paused.", labels=["queue"]
        )
        for queue, flag in self.gauges.paused().items():
            paused.add_metric([queue], 1.0 if flag else 0.0)
        yield paused
        active = GaugeMetricFamily(
            "resq_responses_active", "Responses not yet ended, by status.", labels=["status"]
        )
        for status, count in self.gauges.active().items():
            active.add_metric([status], count)
        yield active
        yield from self._tenants()
        streams: dict[bytes, bytes] = self.redis.hgetall(keys.OPEN_STREAMS)  # type: ignore[assignment]
        yield GaugeMetricFamily(
            "resq_open_streams",
            "SSE streams the API processes are serving.",
            value=max(0, sum(int(v) for v in streams.values())),
        )

    def _tenants(self) -> Iterator[Metric]:
        counts = self.gauges.tenants()
        for kind, doc in (
            ("queued", "Responses waiting to run, by tenant."),
            ("running", "Responses running, by tenant."),
        ):
            gauge = GaugeMetricFamily(f"resq_tenant_{kind}", doc, labels=["tenant"])
            for tenant, by_kind in sorted(counts.items()):
                gauge.add_metric([tenant], by_kind.get(kind, 0))
            yield gauge
        refused = CounterMetricFamily(
            "resq_rate_limited",
            "Requests refused with 429 by a tenant limit.",
            labels=["tenant", "limit"],
        )
        for (tenant, limit), count in sorted(self.gauges.rate_limited().items()):
            refused.add_metric([tenant, limit], count)
        yield refused


def finished_total(client: redis.Redis) -> float:
    """Every response that ever ended (the sum of ``resq_responses_finished``)."""
    raw: dict[bytes, bytes] = client.hgetall(keys.METRICS)  # type: ignore[assignment]
    return sum(float(v) for f, v in raw.items() if json.loads(f)[0] == "responses_finished")


class _Counts(Protocol):
    def active_by_status(self) -> dict[str, int]: ...


def sample_history(client: redis.Redis, store: _Counts, *, now: float) -> None:
    """Append one queue sample (depth, in progress, finished so far) to ``keys.HISTORY``."""
    sample = {
        "at": round(now, 3),
        "depth": queue_depth(client),
        "in_progress": store.active_by_status().get("in_progress", 0),
        "finished_total": finished_total(client),
    }
    pipe = client.pipeline(transaction=False)
    pipe.lpush(keys.HISTORY, json.dumps(sample))
    pipe.ltrim(keys.HISTORY, 0, keys.HISTORY_LENGTH - 1)
    pipe.execute()


def queue_history(client: redis.Redis, *, since: float) -> list[dict[str, Any]]:
    """The samples taken since ``since``, oldest first, each with the rate of responses
    finished since the sample before it (the first one counts from the sample before
    ``since``, when there is one)."""
    raw = client.lrange(keys.HISTORY, 0, keys.HISTORY_LENGTH - 1)
    samples = sorted((json.loads(s) for s in raw), key=lambda s: s["at"])
    data = []
    previous = None
    for sample in samples:
        rate = 0.0
        if previous is not None and sample["at"] > previous["at"]:
            done = max(0.0, sample["finished_total"] - previous["finished_total"])
            rate = done / (sample["at"] - previous["at"])
        previous = sample
        if sample["at"] >= since:
            data.append(
                {
                    "at": sample["at"],
                    "depth": sample["depth"],
                    "in_progress": sample["in_progress"],
                    "finished_per_second": round(rate, 4),
                }
            )
    return data
