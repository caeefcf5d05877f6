"""The FastAPI app of ``barkkit serve``, built by ``create_app(holder, settings)``.

Routes: ``POST /v1/audio/speech`` (``speech``), ``GET /v1/audio/voices``, ``POST /v1/voices``,
``DELETE /v1/voices/{id}``, ``POST /v1/audio/detect``, ``GET /v1/models``, ``GET /health``, ``GET /metrics`` and
the web page at ``/`` (``static/``). The app holds no global state: everything hangs off the object
``create_app`` returns (``app.state.queue``, ``app.state.holder``, ...), so several can live in one process, and
a wrapper (a Ray Serve deployment, say) can build its own around a pipeline it loaded.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from barkkit.pipeline import Pipeline
from barkkit.serve.batching import BatchQueue, pipeline_runner
from barkkit.serve.detect import detect_uploads, make_uploaded_voice
from barkkit.serve.errors import ApiError, error_response, from_exception
from barkkit.serve.holder import PipelineHolder
from barkkit.serve.metrics import CONTENT_TYPE, ServeMetrics
from barkkit.serve.settings import ServeSettings
from barkkit.serve.speech import SpeechService
from barkkit.serve.transport import read_uploads
from barkkit.serve.voices import VoiceStore

__all__ = ["create_app"]

STATIC = Path(__file__).with_name("static")
_OPEN_PATHS = ("/", "/health", "/favicon.ico")  # no API key needed: the page itself, and the load balancer's probe
_ROUTES = ("/v1/audio/speech", "/v1/audio/voices", "/v1/voices", "/v1/audio/detect", "/v1/models", "/health",
           "/metrics", "/")


def _route_label(path: str) -> str:
    """A bounded label for metrics: a known route, or "static" / "other" (never the raw path)."""
    if path.startswith("/v1/voices/"):
        return "/v1/voices/{id}"
    if path.startswith("/static/"):
        return "static"
    return path if path in _ROUTES else "other"


class GuardMiddleware:
    """API key check (constant-time) and per-route request metrics, as plain ASGI (streams pass straight through)."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, metrics: ServeMetrics) -> None:
        self.app, self.api_key, self.metrics = app, api_key, metrics

    def _authorized(self, scope: Scope) -> bool:
        if not self.api_key or scope["path"] in _OPEN_PATHS or scope["path"].startswith("/static/"):
            return True
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        return hmac.compare_digest(given, b"Bearer " + self.api_key.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, began, status = _route_label(scope["path"]), time.perf_counter(), [500]

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self._authorized(scope):
                await self.app(scope, receive, send_and_note)
            else:
                denied = ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                                  code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                await error_response(denied)(scope, receive, send_and_note)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - began)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"no route {request.method} {request.url.path}; see GET / for the page and the API",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return error_response(ApiError(400, f"{where or 'request'}: {first.get('msg', 'invalid')}", param=where))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        return error_response(from_exception(exc))


def _add_api_routes(app: FastAPI, holder: PipelineHolder, settings: ServeSettings, speech: SpeechService,
                    store: VoiceStore, metrics: ServeMetrics) -> None:
    @app.post("/v1/audio/speech")
    async def create_speech(request: Request) -> Response:
        return await speech.handle(request)

    @app.get("/v1/audio/voices")
    async def list_voices() -> Any:
        return await asyncio.to_thread(store.listing)  # a voice source may read the disk or the hub

    @app.post("/v1/voices")
    async def upload_voice(request: Request) -> Any:
        files, fields = await read_uploads(request, settings.max_upload_bytes, max_files=1)
        return JSONResponse(await make_uploaded_voice(holder, store, files, fields, settings), status_code=201)

    @app.delete("/v1/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> Any:
        store.delete(voice_id)
        return {"object": "voice.deleted", "id": voice_id, "deleted": True}

    @app.post("/v1/audio/detect")
    async def detect(request: Request, spectrum: bool = False) -> Any:
        files, _ = await read_uploads(request, settings.max_upload_bytes)
        return await detect_uploads(holder, files, spectrum=spectrum)

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": str(holder.model or "barkkit"), "object": "model", "owned_by": "barkkit",
                                            "mode": holder.mode}]}

    @app.get("/health")
    async def health() -> Response:
        holder.start_loading()  # no-op once started (here for hosts that run no lifespan)
        if holder.error is not None:
            return error_response(ApiError(503, f"the models failed to load: {holder.error}", code="load_failed"))
        if not holder.loaded:
            return error_response(ApiError(503, "the models are loading", code="loading", headers={"Retry-After": "5"}))
        return JSONResponse({"status": "ok", "model": str(holder.model or "barkkit"), "mode": holder.mode})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def create_app(holder: PipelineHolder | Pipeline, settings: ServeSettings | None = None) -> FastAPI:
    """The speech server for ``holder`` (or a loaded ``Pipeline``, served in ``settings.mode``, default exact).

    Starting the app (its lifespan) starts loading the holder's default pipeline; ``/health`` answers 503 until it
    is loaded. The batch queue's dispatcher starts with the first request, in whatever event loop serves it.
    """
    settings = settings or ServeSettings()
    if isinstance(holder, Pipeline):
        holder = PipelineHolder.from_pipeline(holder, mode=settings.mode or "exact", model=settings.model)
    metrics = ServeMetrics()

    def queue_changed(queue: BatchQueue) -> None:
        metrics.queue_depth.set(len(queue.pending))
        metrics.running.set(queue.running)

    def batch_done(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.generation_seconds.observe(seconds)

    queue = BatchQueue(pipeline_runner(holder.get), max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000,
                       max_queue=settings.max_queue, on_change=queue_changed, on_batch=batch_done,
                       on_drop=metrics.dropped_rows.inc)
    store = VoiceStore(settings.voices_dir, holder.plugins)
    speech = SpeechService(holder, queue, store, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        holder.start_loading()
        yield
        queue.close()

    app = FastAPI(title="barkkit", summary="Bark text-to-speech with OpenAI's speech API, and a Bark-audio detector",
                  lifespan=lifespan, docs_url=None, redoc_url=None)  # their pages load scripts from a CDN
    app.state.holder, app.state.queue, app.state.settings, app.state.metrics = holder, queue, settings, metrics
    _add_error_handlers(app)
    _add_api_routes(app, holder, settings, speech, store, metrics)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(GuardMiddleware, api_key=settings.api_key, metrics=metrics)
    return app
