"""Prometheus metrics: request latency from this process, the rest from the database.

The database is the source of truth for jobs, so job counts, queue depth, heartbeats and
trained tokens are read at scrape time by `DatabaseCollector`, the same for every broker
and every web process. Request latency is this process's own; under several gunicorn
workers set PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) so a scrape
sums them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.db.models import BigIntegerField, Count, Max, Min, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from webapp.jobs.models import Job, JobStatus
from webapp.jobs.queue import ROUTES
from webapp.jobs.recovery import ACTIVE
from webapp.ops.models import WorkerState
from webapp.ops.workers import worker_states
from webapp.projects.models import CellRun, RunStatus

# Not in prometheus_client's global registry: /metrics builds its own per scrape.
REQUEST_LATENCY = Histogram(
    "tunebook_request_duration_seconds",
    "Time to answer a request, by the view that answered it",
    ["view"],
    registry=None,
)

# Trained tokens per minute: the average over this window of finished fine-tunes
# (a fine-tune's tokens are counted when it succeeds, so a minute alone is too spiky).
TOKENS_WINDOW = timedelta(hours=1)


class LatencyMiddleware:
    """Times every request; the label is the resolved view name, never the raw path."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match else "<unresolved>"  # the view's dotted path if unnamed
        REQUEST_LATENCY.labels(view=view).observe(time.perf_counter() - started)
        return response


def _jobs_by_status() -> Metric:
    family = GaugeMetricFamily("tunebook_jobs", "Jobs by status", labels=["status"])
    counts = dict(Job.objects.order_by().values_list("status").annotate(n=Count("id")))
    for status in JobStatus.values:
        family.add_metric([status], counts.get(status, 0))
    return family


def _queue_depth() -> Metric:
    family = GaugeMetricFamily(
        "tunebook_queue_depth", "Queued jobs by the task queue they wait on", labels=["queue"]
    )
    counts = dict(
        Job.objects.filter(status=JobStatus.QUEUED)
        .order_by()
        .values_list(KeyTextTransform("queue", "params___task"))
        .annotate(n=Count("id"))
    )
    for name in sorted(set(ROUTES.values()) | {q for q in counts if q}):
        family.add_metric([name], counts.get(name, 0))
    return family


def _heartbeats() -> Iterator[Metric]:
    """Jobs a worker holds, and their heartbeats: the newest says whether any worker is
    alive, the oldest which one may have died (recovery acts after JOB_STALE_AFTER_S)."""
    beats = Job.objects.filter(status__in=ACTIVE).aggregate(
        n=Count("id"), newest=Max("heartbeat_at"), oldest=Min("heartbeat_at")
    )
    yield GaugeMetricFamily("tunebook_jobs_active", "Jobs a worker holds now", value=beats["n"])
    family = GaugeMetricFamily(
        "tunebook_job_heartbeat_age_seconds",
        "Seconds since the newest and the oldest heartbeat of the jobs workers hold",
        labels=["which"],
    )
    now = timezone.now()
    for which in ("newest", "oldest"):
        if beats[which] is not None:
            family.add_metric([which], (now - beats[which]).total_seconds())
    yield family


def _trained_tokens() -> Iterator[Metric]:
    tokens = Cast(KeyTextTransform("trained_tokens", "outputs"), BigIntegerField())
    runs = CellRun.objects.filter(cell__kind="finetune", status=RunStatus.SUCCEEDED)
    total = runs.aggregate(n=Sum(tokens))["n"] or 0
    recent = runs.filter(finished_at__gte=timezone.now() - TOKENS_WINDOW)
    per_minute = (recent.aggregate(n=Sum(tokens))["n"] or 0) / (
        TOKENS_WINDOW / timedelta(minutes=1)
    )
    yield CounterMetricFamily(
        "tunebook_trained_tokens", "Tokens trained by succeeded fine-tunes", value=total
    )
    yield GaugeMetricFamily(
        "tunebook_trained_tokens_per_minute",
        "Tokens trained per minute by fine-tunes that succeeded in the last hour (average)",
        value=per_minute,
    )


def _workers() -> Metric:
    family = GaugeMetricFamily(
        "tunebook_workers", "Worker processes by the state of their heartbeat", labels=["state"]
    )
    states = worker_states()
    for state in WorkerState.values:
        family.add_metric([state], states.get(state, 0))
    return family


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield _jobs_by_status()
        yield _workers()
        yield _queue_depth()
        yield from _heartbeats()
        yield from _trained_tokens()


def exposition() -> bytes:
    """The text a scrape gets: this process's (or every process's) latency, and the DB's."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_LATENCY)
    registry.register(DatabaseCollector())
    return generate_latest(registry)
