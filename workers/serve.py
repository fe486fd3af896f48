"""The serving process: `python -m workers.serve`, one per worker host, beside the Celery
worker. Chat answers (/v1/chat/completions, the playground) come to it through Redis, or
an SQLite file in the embedded default (settings.SERVING_URL; the wire is
webapp/jobs/serving.py) and run in one
continuous-batching loop per base model (finetune_core/infer/engine.py): a request joins
the batch at the next step and leaves when it ends, whatever its adapter.

Each turn of the loop: take as many queued requests as the batch has room for (so the
queue is the backlog the web side bounds), step every engine with work once, then push
each request's new text and ends, read which requests were cancelled, and mark the host
busy while requests run (a CPU fine-tune on it waits between its steps). The outcome goes
to the database once per request, off the loop's thread.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finetune_core.infer.engine import Engine
    from finetune_core.infer.handle import Handle
    from webapp.jobs.serving import ServeRequest
    from workers.serve_engines import Engines

log = logging.getLogger("workers.serve")
IDLE_WAIT_S = 1  # the blocking take's timeout while nothing runs
PRUNE_EVERY_S = 60  # expired events and marks leave the SQLite wire this often
PAUSE_POLL_S = 0.02  # how often a new burst looks whether the fine-tune has paused
CANCELLED = "Cancelled: the client went away."
SERVE_QUEUE = "serve"  # the queue its WorkerHost record names (requests come by the wire)


@dataclass
class _Live:
    request: ServeRequest
    engine: Engine
    handle: Handle
    sent: int = 0  # characters of the text pushed so far
    started: float = field(default_factory=time.monotonic)


class _BusyMark(threading.Thread):
    """Keeps the host's BUSY mark fresh while `working` is set, however long a model load
    or an engine step takes (a CPU fine-tune on the host waits while it is)."""

    def __init__(self, host: str) -> None:
        super().__init__(daemon=True, name="serve-busy")
        self.host, self.working, self.stopped = host, threading.Event(), threading.Event()

    def set(self) -> None:
        from webapp.jobs import serving

        self.working.set()
        serving.mark(serving.BUSY, self.host, serving.BUSY_TTL_S)  # now, not in a moment

    def run(self) -> None:
        from webapp.jobs import serving

        while not self.stopped.wait(serving.BUSY_TTL_S / 4):
            if self.working.is_set():
                try:
                    serving.mark(serving.BUSY, self.host, serving.BUSY_TTL_S)
                except Exception:  # noqa: BLE001 - the wire may be back at the next beat
                    log.exception("serve: could not mark the host busy")


class Server:
    def __init__(self, engines: Engines, *, max_batch: int, node: str = "", host: str = "") -> None:
        self.engines, self.max_batch = engines, max_batch
        self.node = node  # its ops.WorkerHost name: the records say who answered
        self.host = host or socket.gethostname()  # whose fine-tunes take turns with it
        self.pruned = 0.0
        self.live: dict[str, _Live] = {}
        self.running = True
        self.records = ThreadPoolExecutor(1, thread_name_prefix="serve-records")
        self.busy = _BusyMark(self.host)
        self.busy.start()

    def run(self) -> None:
        log.info("serve: ready (batch %d)", self.max_batch)
        while self.running:
            self.turn()
        self.shutdown()

    def turn(self) -> None:
        self._take()
        for engine in self.engines.busy():
            try:
                engine.step()
            except Exception:  # noqa: BLE001 - its requests carry the error; go on
                log.exception("serve: engine step failed")
        self._report()
        if not self.live:
            self.busy.working.clear()
        self._housekeep()

    # --- taking requests ----------------------------------------------------------------

    def _take(self) -> None:
        from webapp.jobs import serving

        room, idle = self.max_batch - len(self.live), not self.live
        if room <= 0:
            return
        raws = serving.wire().take(room, IDLE_WAIT_S if idle else 0)
        if raws and idle and room > len(raws):  # a blocking take returns a burst's first
            raws += serving.wire().take(room - len(raws), 0)
        if not raws:
            return
        taken = time.time()  # in time is when taken, not when started after a model load
        if idle:
            self._make_room()
        for raw in raws:
            self._start(raw, taken)

    def _start(self, raw: bytes | str, taken: float) -> None:
        from webapp.jobs.serving import QUEUE_TIMEOUT, ServeRequest, cancelled, error_event

        request = ServeRequest.from_json(raw)
        if taken > request.deadline:
            self._end(request, error_event("queue_timeout", QUEUE_TIMEOUT))
        elif cancelled([request.id])[0]:
            self._end(request, error_event("cancelled", CANCELLED))
        else:
            try:
                engine = self.engines.get(request.model, request.quantization)
                handle = engine.submit(self._engine_request(engine, request))
            except Exception as exc:  # noqa: BLE001 - the request ends with it, not the loop
                self._end(request, _failure(exc))
                return
            self.live[request.id] = _Live(request, engine, handle)

    def _engine_request(self, engine: Engine, request: ServeRequest) -> Any:
        from finetune_core.infer.handle import Request

        adapter = self.engines.adapter(engine, request.adapter) if request.adapter else None
        return Request(
            messages=request.messages,
            adapter=adapter,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=request.stop,
        )

    # --- reporting ----------------------------------------------------------------------

    def _report(self) -> None:
        from webapp.jobs import serving

        if not self.live:
            return
        new: dict[str, list[dict[str, Any]]] = {}
        for rid, live in list(self.live.items()):
            text, events = live.handle.text, []
            if len(text) > live.sent:
                events.append({"t": "text", "text": text[live.sent :]})
                live.sent = len(text)
            if live.handle.done:
                events.append(_outcome(live.handle))
                del self.live[rid]
                served = {"served_by": self.node, "generate_s": time.monotonic() - live.started}
                self.records.submit(_write_record, live.request, events[-1], text, served)
            if events:
                new[rid] = events
        serving.publish(new)
        rids = list(self.live)
        for rid, flag in zip(rids, serving.cancelled(rids), strict=True):
            if flag:
                self.live[rid].engine.cancel(self.live[rid].handle)

    def _make_room(self) -> None:
        """A new burst: mark the host busy, and while a CPU fine-tune on it has a step in
        flight, wait for that step to end (it then pauses): two cores shared run both
        several times slower, so the first answers come sooner after the step than beside
        it. The TRAINING mark's TTL bounds the wait when the fine-tune is gone."""
        from webapp.jobs import serving

        self.busy.set()
        while serving.marked(serving.TRAINING, self.host) and not serving.marked(
            serving.PAUSED, self.host
        ):
            time.sleep(PAUSE_POLL_S)

    def _housekeep(self) -> None:
        from webapp.jobs import serving

        now = time.monotonic()
        if now - self.pruned > PRUNE_EVERY_S:
            self.pruned = now
            serving.wire().prune()

    def _end(self, request: ServeRequest, event: dict[str, Any]) -> None:
        """A request that never ran: its one event, and its record."""
        from webapp.jobs.serving import publish

        publish({request.id: [event]})
        self.records.submit(_write_record, request, event, "")

    def shutdown(self) -> None:
        """Requests in flight end with an error that says why; queued ones stay queued."""
        from webapp.jobs.serving import error_event

        for live in self.live.values():
            self._end(live.request, error_event("unavailable", "The server is shutting down."))
        self.live.clear()
        self.busy.stopped.set()
        self.records.shutdown(wait=True)


def _outcome(handle: Handle) -> dict[str, Any]:
    from webapp.jobs.serving import error_event

    if handle.error is not None:
        return _failure(handle.error)
    if handle.finish_reason == "cancelled":
        return error_event("cancelled", CANCELLED)
    return {"t": "done", "finish_reason": handle.finish_reason, "usage": handle.usage}


def _failure(exc: BaseException) -> dict[str, Any]:
    from webapp.jobs.serving import error_event
    from workers.services_bridge import is_user_error

    if is_user_error(exc) or isinstance(exc, (ValueError, FileNotFoundError)):
        return error_event("user_error", str(exc))
    log.error("serve: request failed", exc_info=exc)
    return error_event("server_error", f"{type(exc).__name__}: {exc}")


def _write_record(
    request: ServeRequest, outcome: dict[str, Any], text: str, served: dict[str, Any] | None = None
) -> None:
    """The request's outcome, written once: the API's completion row, with who answered it
    and how long that took."""
    from webapp.api.v1.services import chat_completion_fail, chat_completion_finish
    from workers.db_retry import db_retrying

    if request.completion_id is None:
        return
    try:
        if outcome["t"] == "done":
            result = {"text": text, "finish_reason": outcome["finish_reason"], **outcome["usage"]}
            result |= served or {}
            db_retrying(chat_completion_finish)(completion_id=request.completion_id, result=result)
        else:
            db_retrying(chat_completion_fail)(
                completion_id=request.completion_id,
                error=outcome["message"],
                # the web side wrote why it stopped waiting (a timeout): that stays
                unless_settled=outcome["code"] == "cancelled",
            )
    except Exception:  # noqa: BLE001 - a lost record must not stop serving
        log.exception("serve: could not record completion %s", request.completion_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.serve", description=__doc__)
    parser.add_argument("-l", "--log-level", default="info")
    parser.add_argument(
        "--preload", action="append", default=[], metavar="MODEL[:QUANTIZATION]",
        help="load this base model before taking requests (repeatable; quantization nf4)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.conf import settings

    from webapp.jobs import serving
    from workers import base_models
    from workers.announce import Heartbeat
    from workers.serve_engines import Engines

    base_models.install()
    if not serving.enabled():
        raise SystemExit("SERVING_URL is off: nothing to serve.")
    engines = Engines()
    for name in args.preload:
        model, _, quantization = name.partition(":")
        engines.get(model, quantization or "nf4")
    # Announced like a training worker (ops.WorkerHost, queue "serve"), so operators see it
    # and its measured generation throughput; routing reads TRAINING_QUEUES only.
    heartbeat = Heartbeat(f"serve@{socket.gethostname()}", [SERVE_QUEUE])
    heartbeat.start()
    server = Server(engines, max_batch=settings.SERVE_MAX_BATCH, node=heartbeat.node)

    def stop(_signum: int, _frame: Any) -> None:
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run()
    finally:
        heartbeat.stop()


if __name__ == "__main__":
    main()
