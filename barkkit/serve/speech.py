"""``POST /v1/audio/speech``: OpenAI's speech endpoint, sentence by sentence through the batch queue.

The input is split into sentences, and sentence i is generated with seed ``seed + i`` and the request's voice
and options, as one row of the queue. The answer is the sentences' audio one after another, encoded piece by
piece (``AudioStreamEncoder``), whether it is sent whole, streamed as audio (``stream_format: "audio"``) or as
OpenAI's server-sent events (``"sse"``): the streamed pcm chunks are the whole pcm body, byte for byte. A stream
queues its first sentence alone and the rest once that one is taken, so its first bytes come after one sentence's
generation, not the whole input's. Errors in the first sentence (a bad option, say) are a 4xx before any byte.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.responses import Response, StreamingResponse
from starlette.requests import Request

from barkkit.audio_encoding import MEDIA_TYPES, AudioStreamEncoder, encode_audio
from barkkit.errors import PipelineError
from barkkit.pipeline import Generation
from barkkit.serve.batching import BatchQueue, Row
from barkkit.serve.errors import ApiError, from_exception
from barkkit.serve.holder import PipelineHolder
from barkkit.serve.metrics import ServeMetrics
from barkkit.serve.schemas import SpeechRequest, parse_json_body, parse_speech_request
from barkkit.serve.settings import ServeSettings
from barkkit.serve.transport import ClientGone, read_body, wait_for_rows
from barkkit.serve.voices import VoiceStore
from barkkit.tokens import Audio

__all__ = ["SpeechService", "split_sentences"]

# a sentence ends at . ! ? … (or their CJK forms) followed by space, or at a blank line
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+|\n\s*\n")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, none empty (the whole text when it has no sentence end)."""
    parts = [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]
    return parts or [text.strip()]


def _header_text(text: str) -> str:
    """Header values are latin-1 text on one line: anything else becomes '?'."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:200])


def _audio(generation: Generation) -> Audio:
    """A row's audio: the holder's pipelines end at a decoder (``PipelineHolder`` refuses others)."""
    if generation.audio is None:
        raise PipelineError("the pipeline has no audio decoder, so it cannot speak")
    return generation.audio


def _samples(generation: Generation, speed: float) -> np.ndarray:
    """A row's float samples (n,), time-stretched without a change of pitch when ``speed`` is not 1."""
    samples = np.asarray(_audio(generation).samples, dtype=np.float32)
    if speed == 1.0 or samples.size == 0:
        return samples
    import librosa

    return librosa.effects.time_stretch(samples, rate=speed).astype(np.float32)


@dataclass
class _Job:
    """One request's rows and how to answer it."""

    request: SpeechRequest
    rows: list[Row]
    seed: int


class SpeechService:
    """Answers speech requests from the holder's pipelines through ``queue``."""

    def __init__(self, holder: PipelineHolder, queue: BatchQueue, voices: VoiceStore, settings: ServeSettings,
                 metrics: ServeMetrics) -> None:
        self.holder, self.queue, self.voices = holder, queue, voices
        self.settings, self.metrics = settings, metrics

    async def _job(self, request: Request) -> _Job:
        limit = max(1 << 20, 8 * self.settings.max_input_chars)
        speech = parse_speech_request(parse_json_body(await read_body(request, limit)),
                                      max_input_chars=self.settings.max_input_chars)
        if not self.holder.loaded:
            self.holder.start_loading()
            raise ApiError(503, "the models are still loading; retry shortly (GET /health says when)",
                           code="loading", headers={"Retry-After": "5"})
        voice = await asyncio.to_thread(self.voices.resolve, speech.voice) if speech.voice else None
        seed = speech.seed if speech.seed is not None else int.from_bytes(os.urandom(4), "little") & 0x7FFF_FFFF
        mode = speech.mode or self.holder.mode
        rows = [Row(text=sentence, voice=voice, seed=seed + i, mode=mode, options=dict(speech.options))
                for i, sentence in enumerate(split_sentences(speech.input))]
        return _Job(speech, rows, seed)

    def _headers(self, job: _Job, rate: int | None) -> dict[str, str]:
        headers = {"X-Barkkit-Seed": str(job.seed), "X-Barkkit-Sentences": str(len(job.rows)),
                   "X-Barkkit-Model": _header_text(str(self.holder.model or "barkkit")),
                   "X-Barkkit-Requested-Model": _header_text(job.request.model or ""), "Cache-Control": "no-store"}
        if rate is not None:
            headers["X-Barkkit-Sample-Rate"] = str(rate)
        return headers

    async def _pieces(self, job: _Job, generations: list[Generation]) -> list[np.ndarray]:
        speed = job.request.speed
        pieces = [await asyncio.to_thread(_samples, g, speed) if speed != 1.0 else _samples(g, speed) for g in generations]
        self.metrics.audio_seconds.inc(sum(_audio(g).duration_s for g in generations))
        return pieces

    async def handle(self, request: Request) -> Response:
        job = await self._job(request)
        if job.request.stream_format is None:
            return await self._whole(request, job)
        return await self._stream(request, job)

    async def _whole(self, request: Request, job: _Job) -> Response:
        futures = self.queue.submit(job.rows)
        try:
            generations = await wait_for_rows(request, futures)
        except ClientGone:
            return Response(status_code=499)
        except Exception as exc:
            raise from_exception(exc) from None
        rate = _audio(generations[0]).sample_rate
        body = encode_audio(await self._pieces(job, generations), job.request.response_format, rate)
        return Response(body, media_type=MEDIA_TYPES[job.request.response_format], headers=self._headers(job, rate))

    async def _stream(self, request: Request, job: _Job) -> Response:
        self.queue.check_room(len(job.rows))
        first_future = self.queue.submit(job.rows[:1], check_capacity=False)[0]
        rest_task = asyncio.ensure_future(self._submit_rest(job))
        sse = job.request.stream_format == "sse"
        first: Generation | None = None
        if not (sse and job.request.progress):  # the page's progress stream starts at once; errors come as events
            try:
                first = (await wait_for_rows(request, [first_future]))[0]
            except BaseException as exc:  # nothing is sent yet: drop the rest, then answer (or go on cancelling)
                rest_task.cancel()
                self._cancel(job)
                if isinstance(exc, ClientGone):
                    return Response(status_code=499)
                if isinstance(exc, Exception):
                    raise from_exception(exc) from None
                raise
        rate = _audio(first).sample_rate if first is not None else None
        headers = self._headers(job, rate)
        if sse:
            return StreamingResponse(self._sse(job, first, rest_task), media_type="text/event-stream", headers=headers)
        assert first is not None and rate is not None  # not SSE: the first sentence was awaited above
        encoder = AudioStreamEncoder(job.request.response_format, rate)
        return StreamingResponse(self._audio_chunks(job, first, encoder, rest_task),
                                 media_type=MEDIA_TYPES[job.request.response_format], headers=headers)

    async def _submit_rest(self, job: _Job) -> None:
        if len(job.rows) > 1:
            await job.rows[0].started.wait()  # queued behind the first: they form the next batch, with others' rows
            self.queue.submit(job.rows[1:], check_capacity=False)

    def _cancel(self, job: _Job) -> None:
        for row in job.rows:
            if row.future is not None and not row.future.done():
                row.future.cancel()

    async def _audio_chunks(self, job: _Job, first: Generation, encoder: AudioStreamEncoder,
                            rest_task: asyncio.Future) -> AsyncIterator[bytes]:
        try:
            for i, row in enumerate(job.rows):
                if i:
                    await rest_task
                generation = first if i == 0 else await row.submitted()
                chunk = encoder.feed((await self._pieces(job, [generation]))[0])
                if chunk:
                    yield chunk
            tail = encoder.finish()
            if tail:
                yield tail
        finally:  # the client went away, or a later sentence failed: drop what is still queued
            rest_task.cancel()
            self._cancel(job)

    async def _sse(self, job: _Job, first: Generation | None, rest_task: asyncio.Future) -> AsyncIterator[bytes]:
        encoder: AudioStreamEncoder | None = None
        total_s = 0.0
        try:
            for i, row in enumerate(job.rows):
                generation = first if i == 0 else None
                if i:
                    await rest_task
                while generation is None:
                    try:
                        generation = await asyncio.wait_for(asyncio.shield(row.submitted()), 0.25)
                    except TimeoutError:
                        if job.request.progress:
                            yield _event(self._progress_event(job, i))
                if encoder is None:
                    encoder = AudioStreamEncoder(job.request.response_format, _audio(generation).sample_rate)
                piece = (await self._pieces(job, [generation]))[0]
                total_s += piece.size / encoder.sample_rate
                yield _delta(encoder.feed(piece))
                if job.request.progress:
                    yield _event(self._progress_event(job, i + 1))
            assert encoder is not None
            yield _delta(encoder.finish())
            yield _event({"type": "speech.audio.done", "sample_rate": encoder.sample_rate,
                          "usage": {"input_characters": len(job.request.input), "audio_seconds": round(total_s, 3)}})
        except Exception as exc:  # the headers are sent: the failure goes out as OpenAI's error event
            yield _event({"type": "error", **from_exception(exc).body()})
        finally:
            rest_task.cancel()
            self._cancel(job)

    def _progress_event(self, job: _Job, sentences_done: int) -> dict[str, Any]:
        row = job.rows[min(sentences_done, len(job.rows) - 1)]
        step, done, total = row.progress or ("queued", 0, 1)
        return {"type": "barkkit.progress", "sentences_done": sentences_done, "sentences": len(job.rows),
                "step": step, "done": done, "total": total}


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _delta(chunk: bytes) -> bytes:
    return _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}) if chunk else b""
