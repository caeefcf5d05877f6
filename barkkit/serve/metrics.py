"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own per app (tests build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServeMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServeMetrics:
    """Requests by route and status, queue depth, batch sizes, audio seconds made and the seconds it took."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("barkkit_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.queue_depth = Gauge("barkkit_queue_depth", "Rows (sentences) waiting for a batch", registry=self.registry)
        self.running = Gauge("barkkit_batch_rows_running", "Rows in the batch now running", registry=self.registry)
        self.batch_size = Histogram("barkkit_batch_size", "Rows per generate_batch call",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=self.registry)
        self.generation_seconds = Histogram("barkkit_generation_seconds", "Seconds one batch took to generate",
                                            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300),
                                            registry=self.registry)
        self.audio_seconds = Counter("barkkit_audio_generated_seconds", "Seconds of audio generated",
                                     registry=self.registry)
        self.dropped_rows = Counter("barkkit_rows_dropped", "Queued rows dropped because their client went away",
                                    registry=self.registry)
        self.latency = Histogram("barkkit_request_seconds", "Seconds from request to the last byte, by route",
                                 ["route"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120),
                                 registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
