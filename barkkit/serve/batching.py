"""Concurrent requests, run together: a queue of rows that one worker thread takes in batches.

Every request adds its rows (one per sentence) to the queue. The dispatcher takes the oldest row and every queued
row that can share its ``generate_batch`` call (same mode and options; voices and seeds are per row), waiting at
most ``max_wait_s`` after that row arrived for the batch to fill to ``max_batch``. One thread runs the batches, one
after another, so the model is never used by two at once. Each row gets what it would get alone (the engine's rows
are independent), so batching changes throughput, never bytes.

- A full queue refuses new rows (``QueueFull``: the server answers 503 with ``Retry-After``); a request always fits
  into an empty queue, however many sentences it has.
- A row whose request went away (its future cancelled) is dropped when the next batch is formed; a batch already
  running finishes and its result for that row is discarded.
- A batch that fails on bad input (a ``BarkkitError``) is run again row by row, so one request's bad seed fails
  that request only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from barkkit.errors import BarkkitError
from barkkit.pipeline import Generation
from barkkit.serve.errors import ApiError
from barkkit.voice import Voice

__all__ = ["Row", "BatchQueue", "QueueFull", "pipeline_runner", "BatchRunner"]


@dataclass(eq=False)
class Row:
    """One text to generate, as part of a request. ``progress`` is (step, done, total) while its batch runs."""

    text: str
    voice: Voice | None
    seed: int
    mode: str
    options: dict[str, Any] = field(default_factory=dict)
    future: "asyncio.Future[Generation] | None" = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    progress: tuple[str, int, int] | None = None
    enqueued_at: float = 0.0

    def submitted(self) -> "asyncio.Future[Generation]":
        """The row's future, which ``BatchQueue.submit`` made (a ``RuntimeError`` before that)."""
        if self.future is None:
            raise RuntimeError("this row has not been submitted to a BatchQueue")
        return self.future

    @property
    def key(self) -> tuple[str, str]:
        """Rows with the same key can share one ``generate_batch`` call."""
        return self.mode, json.dumps(self.options, sort_keys=True)


BatchRunner = Callable[[Sequence[Row]], list["Generation | BaseException"]]
"""Runs rows of one key together (on the worker thread); one result or exception per row."""


class QueueFull(ApiError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(503, f"the server is busy (its queue is full); retry in {retry_after_s} s",
                         code="queue_full", headers={"Retry-After": str(retry_after_s)})


class DaemonWorker:
    """One daemon thread that runs submitted calls in order (``submit`` returns a ``concurrent.futures.Future``).

    Not a ``ThreadPoolExecutor``: Python joins those threads at exit, so a batch still running when the shutdown
    timeout has passed would keep a stopping server alive until it finished.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> "Future[Any]":
        future: Future[Any] = Future()
        self._jobs.put((future, function, args))
        return future

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, function, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Stop after the call in progress (if any); queued calls are not run."""
        self._jobs.put(None)


class BatchQueue:
    """The queue and its dispatcher. Start nothing at construction: the dispatcher starts with the first row, in the
    event loop that submits it (so the app works under any ASGI host, and in a Ray Serve replica)."""

    def __init__(self, run: BatchRunner, *, max_batch: int = 8, max_wait_s: float = 0.05, max_queue: int = 64,
                 on_change: Callable[["BatchQueue"], None] | None = None,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_drop: Callable[[int], None] | None = None) -> None:
        self.run = run
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.max_queue = max(1, int(max_queue))
        self.pending: list[Row] = []
        self.running = 0
        self._on_change, self._on_batch, self._on_drop = on_change, on_batch, on_drop
        self._executor = DaemonWorker("barkkit-batch")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._batch_seconds = 1.0  # a running estimate, for Retry-After

    # submitting ------------------------------------------------------------------------------------------------
    def submit(self, rows: Sequence[Row], *, check_capacity: bool = True) -> list["asyncio.Future[Generation]"]:
        """Queue ``rows``; their futures resolve to a ``Generation`` (or raise). ``QueueFull`` when there is no room."""
        if check_capacity:
            self.check_room(len(rows))
        loop = asyncio.get_running_loop()
        self._ensure_started(loop)
        futures: list[asyncio.Future[Generation]] = []
        for row in rows:
            row.future = loop.create_future()
            row.enqueued_at = loop.time()
            self.pending.append(row)
            futures.append(row.future)
        self._changed()
        assert self._wake is not None
        self._wake.set()
        return futures

    def check_room(self, n_rows: int) -> None:
        """``QueueFull`` (with a Retry-After estimate) when ``n_rows`` more rows do not fit."""
        live = self._prune()
        if live and live + n_rows > self.max_queue:
            batches_ahead = math.ceil((live + self.running) / self.max_batch)
            raise QueueFull(max(1, math.ceil(batches_ahead * self._batch_seconds)))

    def _ensure_started(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._dispatch(), name="barkkit-batcher")

    def _prune(self) -> int:
        """Drop rows whose request is gone; the number still queued."""
        kept = [row for row in self.pending if row.future is None or not row.future.done()]
        dropped = len(self.pending) - len(kept)
        if dropped:
            self.pending = kept
            if self._on_drop:
                self._on_drop(dropped)
            self._changed()
        return len(kept)

    def _changed(self) -> None:
        if self._on_change:
            self._on_change(self)

    # dispatching -----------------------------------------------------------------------------------------------
    async def _next_batch(self) -> list[Row]:
        """Wait for rows, then up to ``max_wait_s`` (from the oldest's arrival) for its batch to fill."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._prune():
                self._wake.clear()
                await self._wake.wait()
                continue
            first = self.pending[0]
            batch = [row for row in self.pending if row.key == first.key][: self.max_batch]
            remaining = first.enqueued_at + self.max_wait_s - loop.time()
            if len(batch) >= self.max_batch or remaining <= 0:
                return batch
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    async def _dispatch(self) -> None:
        while True:
            batch = await self._next_batch()
            taken = set(map(id, batch))
            self.pending = [row for row in self.pending if id(row) not in taken]
            self.running = len(batch)
            self._changed()
            for row in batch:
                row.started.set()
            began = time.perf_counter()
            try:
                results = await asyncio.wrap_future(self._executor.submit(self._run_safely, batch))
            finally:
                self.running = 0
                self._changed()
            seconds = time.perf_counter() - began
            self._batch_seconds = 0.7 * self._batch_seconds + 0.3 * seconds
            if self._on_batch:
                self._on_batch(len(batch), seconds)
            for row, result in zip(batch, results, strict=True):
                if row.future is None or row.future.done():
                    continue  # its request went away while the batch ran
                if isinstance(result, BaseException):
                    row.future.set_exception(result)
                else:
                    row.future.set_result(result)

    def _run_safely(self, batch: Sequence[Row]) -> list[Any]:
        try:
            return self.run(batch)
        except BaseException as exc:  # every row learns of the failure; the dispatcher goes on
            return [exc] * len(batch)

    def close(self) -> None:
        """Stop the dispatcher; rows still queued fail with 503."""
        for row in self.pending:
            if row.future is not None and not row.future.done():
                row.future.set_exception(ApiError(503, "the server is shutting down", code="shutting_down"))
        self.pending.clear()
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown()


def pipeline_runner(get_pipeline: Callable[[str], Any]) -> BatchRunner:
    """A ``BatchRunner`` over ``Pipeline.generate_batch``: rows of one key in one call, row by row after a failure."""

    def progress_of(rows: Sequence[Row]) -> Callable[[str, int, int], None]:
        def progress(step: str, done: int, total: int) -> None:
            for row in rows:
                row.progress = (step, done, total)

        return progress

    def call(rows: Sequence[Row]) -> list[Generation]:
        pipeline = get_pipeline(rows[0].mode)
        return pipeline.generate_batch([row.text for row in rows], voices=[row.voice for row in rows],
                                       seeds=[row.seed for row in rows], progress=progress_of(rows), **rows[0].options)

    def run(rows: Sequence[Row]) -> list[Generation | BaseException]:
        try:
            return list(call(rows))
        except BarkkitError as exc:
            if len(rows) == 1:
                return [exc]
        results: list[Generation | BaseException] = []
        for row in rows:  # find the row(s) at fault; the others still get their audio
            try:
                results.append(call([row])[0])
            except BarkkitError as exc:
                results.append(exc)
        return results

    return run
