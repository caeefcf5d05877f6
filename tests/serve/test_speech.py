"""``POST /v1/audio/speech`` through the official ``openai`` client: formats, streaming, SSE, batching."""

from __future__ import annotations

import base64
import io
import json
import threading

import av
import numpy as np
import soundfile

from barkkit import load_pipeline
from tests.serve.conftest import FAST

TEXT = "Hello there. How are you today?"


def speak(client, fmt="pcm", text=TEXT, seed=1, voice="test/alpha", **extra):
    response = client.audio.speech.create(model="bark", voice=voice, input=text, response_format=fmt,
                                          extra_body={"seed": seed, **FAST, **extra})
    return response.content


def decoded(data: bytes) -> np.ndarray:
    """Samples of any format, through FFmpeg (the streams' formats have no length in their headers)."""
    with av.open(io.BytesIO(data)) as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


def test_every_format_is_the_same_speech(client, fast_pipeline):
    pcm = np.frombuffer(speak(client, "pcm", text="Hello there."), "<i2")
    alone = fast_pipeline.generate("Hello there.", voice="test/alpha", seed=1, **FAST)  # the library, directly
    assert pcm.size == alone.audio.samples.size > 0
    assert np.array_equal(pcm, np.round(np.clip(alone.audio.samples, -1, 1) * 32767).astype("<i2"))
    wav, rate = soundfile.read(io.BytesIO(speak(client, "wav", text="Hello there.")), dtype="int16")
    assert rate == 24_000 and np.array_equal(wav, pcm)
    flac, _ = soundfile.read(io.BytesIO(speak(client, "flac", text="Hello there.")), dtype="int16")
    assert np.array_equal(flac, pcm)  # lossless
    for fmt in ("mp3", "opus", "aac"):  # lossy: as long as the speech, give or take the codec's padding
        data = speak(client, fmt, text="Hello there.")
        assert abs(decoded(data).size * 24_000 / _rate(data) - pcm.size) < 0.1 * 24_000, fmt


def _rate(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return container.streams.audio[0].rate


def test_streamed_pcm_is_the_whole_body_and_other_streams_decode_alike(client):
    whole = speak(client, "pcm", seed=5)
    alone = [speak(client, "pcm", text=s, seed=5 + i) for i, s in enumerate(["Hello there.", "How are you today?"])]
    assert whole == b"".join(alone)  # sentence i is generated with seed + i
    with client.audio.speech.with_streaming_response.create(
            model="bark", voice="test/alpha", input=TEXT, response_format="pcm",
            extra_body={"seed": 5, "stream_format": "audio", **FAST}) as response:
        assert response.headers["x-barkkit-sentences"] == "2"
        chunks = list(response.iter_bytes())
    assert b"".join(chunks) == whole  # byte for byte
    for fmt in ("opus",):  # Ogg pages, flushed as the sentences come
        with client.audio.speech.with_streaming_response.create(
                model="bark", voice="test/alpha", input=TEXT, response_format=fmt,
                extra_body={"seed": 5, "stream_format": "audio", **FAST}) as response:
            stream = response.read()
        assert np.array_equal(decoded(stream), decoded(speak(client, fmt, seed=5))), fmt


def test_sse_sends_openai_events_whose_audio_is_the_body(client, server):
    import urllib.request

    body = json.dumps({"model": "bark", "input": TEXT, "voice": "test/alpha", "response_format": "pcm",
                       "stream_format": "sse", "seed": 2, **FAST}).encode()
    request = urllib.request.Request(f"{server.url}/v1/audio/speech", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.read().decode().splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * (len(events) - 1) + ["speech.audio.done"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(events) >= 3 and audio == speak(client, "pcm", seed=2)


def test_concurrent_requests_are_batched_and_equal_their_single_runs(client, server):
    texts = [f"Number {n} speaks." for n in range(8)]
    singles = [speak(client, "pcm", text=t, seed=10 + n, voice="test/alpha" if n % 2 else "test/beta")
               for n, t in enumerate(texts)]
    batches_before = _metric(server, "barkkit_batch_size_count")
    results: list[bytes | None] = [None] * 8

    def one(n: int) -> None:
        results[n] = speak(client, "pcm", text=texts[n], seed=10 + n, voice="test/alpha" if n % 2 else "test/beta")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == singles
    assert _metric(server, "barkkit_batch_size_count") - batches_before < 8  # some rows shared a batch
    assert _metric(server, "barkkit_batch_size_sum") >= 16


def _metric(server, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_speed_stretches_the_time(client):
    normal = np.frombuffer(speak(client, "pcm", text="Again.", seed=3), "<i2")
    faster = np.frombuffer(speak(client, "pcm", text="Again.", seed=3, speed=2.0), "<i2")
    assert abs(faster.size - normal.size / 2) <= 0.02 * normal.size


def test_the_other_mode_loads_on_first_use(client, model_folder, serve_plugins):
    exact = np.frombuffer(speak(client, "pcm", text="Exactly.", seed=4, mode="exact"), "<i2")
    alone = load_pipeline(model_folder, plugins=serve_plugins).generate("Exactly.", voice="test/alpha", seed=4, **FAST)
    assert np.array_equal(exact, np.round(np.clip(alone.audio.samples, -1, 1) * 32767).astype("<i2"))
