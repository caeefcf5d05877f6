"""Every bad input gets its 4xx in OpenAI's error shape; voices, detection, metrics, health and the API key."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import openai
import pytest
import soundfile

from barkkit.serve import PipelineHolder, ServeSettings, create_app
from tests.serve.conftest import FAST, ServerThread, make_server
from tests.serve.http_helpers import call, error_of, multipart, post_json

SPEECH = {"model": "bark", "input": "Hi there.", "voice": "test/alpha", "response_format": "pcm", **FAST}


@pytest.mark.parametrize("change, param, words", [
    ({"input": "   "}, "input", "input is empty"),
    ({"input": "x" * 5000}, "input", "over this server's limit of 4096"),
    ({"voice": "nobody/here"}, "voice", "unknown voice 'nobody/here'"),
    ({"voice": "../../etc/passwd"}, "voice", "paths are not accepted"),
    ({"voice": "/etc/passwd"}, "voice", "paths are not accepted"),
    ({"voice": "a\\b"}, "voice", "paths are not accepted"),
    ({"response_format": "ogg"}, "response_format", "use one of mp3, opus, aac, flac, wav, pcm"),
    ({"stream_format": "video"}, "stream_format", "use one of audio, sse"),
    ({"temperature": 0.5}, None, "unknown option(s) temperature"),
    ({"top_p": 2}, None, "top_p must be a probability"),
    ({"text_temp": -1}, None, "text_temp must be a number above 0"),
    ({"speed": 9}, "speed", "speed must be a number from 0.25 to 4.0"),
    ({"seed": 1.5}, "seed", "seed must be a whole number"),
    ({"seed": 2**70}, None, "seed must be a whole number from 0 to 2**64 - 1"),
    ({"mode": "turbo"}, "mode", "use one of exact, fast"),
    ({"instructions": "be happy"}, "instructions", "not supported"),
])
def test_bad_speech_requests_are_400_with_a_readable_message(server, change, param, words):
    status, _, body = post_json(f"{server.url}/v1/audio/speech", {**SPEECH, **change})
    error = error_of(status, body)
    assert status == 400 and words in error["message"], error
    assert error["type"] == "invalid_request_error" and (param is None or error["param"] == param)


def test_bad_options_fail_before_a_stream_starts(client):
    with pytest.raises(openai.BadRequestError, match="top_k must be a whole number"), \
            client.audio.speech.with_streaming_response.create(
                model="bark", voice="test/alpha", input="Hi.", response_format="pcm",
                extra_body={"stream_format": "audio", "top_k": 0}) as response:
        response.read()


@pytest.mark.parametrize("raw, words", [
    (b'{"input": "hi", "text_temp": NaN}', "NaN is not a JSON number"),
    (b'{"input": "hi", "text_temp": 1e999}', "overflows to infinity"),
    (b'{"input": "hi",', "malformed JSON"),
    (b'["hi"]', "must be a JSON object"),
    (b"", "request body is empty"),
])
def test_malformed_json_is_400(server, raw, words):
    status, _, body = post_json(f"{server.url}/v1/audio/speech", raw)
    assert status == 400 and words in error_of(status, body)["message"]


def test_unknown_routes_and_methods_have_the_error_shape(server):
    status, _, body = call(f"{server.url}/v1/nothing")
    assert status == 404 and error_of(status, body)["type"] == "not_found_error"
    status, _, body = call(f"{server.url}/v1/audio/speech")
    assert status == 405 and error_of(status, body)


def _wav(samples: np.ndarray, rate: int = 24_000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_voices_list_upload_use_and_refuse(server, client, tmp_path):
    listing = json.loads(call(f"{server.url}/v1/audio/voices")[2])
    assert {"test/alpha", "test/beta"} <= {voice["id"] for voice in listing["voices"]}
    rng = np.random.default_rng(0)
    recording = _wav((0.2 * rng.standard_normal(24_000 * 3) * np.hanning(24_000 * 3)).astype(np.float32))
    body, headers = multipart([("me.wav", recording)], {"name": "my-voice"})
    status, _, answer = call(f"{server.url}/v1/voices", body, headers=headers)
    assert status == 201, answer
    made = json.loads(answer)
    assert made["id"] == "my-voice" and made["codec_frames"] == 225 and made["semantic_tokens"] > 0
    data_dir = server.app.state.settings.data_dir
    assert (data_dir / "voices" / "my-voice.npz").is_file()
    assert "my-voice" in {voice["id"] for voice in json.loads(call(f"{server.url}/v1/audio/voices")[2])["voices"]}
    speech = client.audio.speech.create(model="bark", voice="my-voice", input="Mine.", response_format="pcm",
                                        extra_body={"seed": 0, **FAST}).content
    assert len(speech) > 0
    status, _, answer = call(f"{server.url}/v1/voices", body, headers=headers)
    assert status == 409 and "exists" in error_of(status, answer)["message"]
    for evil in ("../evil", "a/b", ".hidden"):
        evil_body, evil_headers = multipart([("x.wav", recording)], {"name": evil})
        status, _, answer = call(f"{server.url}/v1/voices", evil_body, headers=evil_headers)
        assert status == 400 and "no path separators" in error_of(status, answer)["message"]
    assert sorted(p.name for p in (data_dir / "voices").iterdir()) == ["my-voice.npz"]
    assert not (data_dir / "evil.npz").exists() and not (data_dir.parent / "evil.npz").exists()
    garbage, garbage_headers = multipart([("noise.wav", b"not audio at all" * 10)], {"name": "garbage"})
    status, _, answer = call(f"{server.url}/v1/voices", garbage, headers=garbage_headers)
    assert status == 400 and "noise.wav" in error_of(status, answer)["message"]
    assert call(f"{server.url}/v1/voices/my-voice", method="DELETE")[0] == 200
    assert call(f"{server.url}/v1/voices/my-voice", method="DELETE")[0] == 404


def test_detect_files_raw_bodies_and_unreadable_audio(server, client):
    speech = client.audio.speech.create(model="bark", voice="test/beta", input="Detect me.", response_format="wav",
                                        extra_body={"seed": 9, **FAST}).content
    samples, rate = soundfile.read(io.BytesIO(speech))
    buffer = io.BytesIO()  # the tiny model's clip, repeated past the detector's 1 s minimum
    soundfile.write(buffer, np.tile(samples, int(np.ceil(1.5 * rate / len(samples)))), rate, format="WAV")
    speech = buffer.getvalue()
    body, headers = multipart([("speech.wav", speech), ("broken.mp3", b"\x00garbage" * 50)])
    status, _, answer = call(f"{server.url}/v1/audio/detect?spectrum=true", body, headers=headers)
    assert status == 200, answer
    good, bad = json.loads(answer)["data"]
    assert good["path"] == "speech.wav" and 0 <= good["bark_probability"] <= 1 and isinstance(good["is_bark"], bool)
    assert good["spectrum"]["comb_hz"][:2] == [600.0, 1200.0] and len(good["spectrum"]["prominence_db"]) > 1000
    assert bad["path"] == "broken.mp3" and "broken.mp3" in bad["error"] and "/tmp" not in bad["error"]
    status, _, answer = call(f"{server.url}/v1/audio/detect", speech, headers={"Content-Type": "audio/wav"})
    assert status == 200 and json.loads(answer)["data"][0]["bark_probability"] == good["bark_probability"]
    status, _, answer = call(f"{server.url}/v1/audio/detect", b"\x00" * 100, headers={"Content-Type": "audio/wav"})
    assert status == 400 and error_of(status, answer)["code"] == "invalid_audio"
    short = io.BytesIO()  # too short to judge: a result without a verdict, as `barkkit detect --json` prints it
    soundfile.write(short, samples[: rate // 2], rate, format="WAV")
    status, _, answer = call(f"{server.url}/v1/audio/detect", short.getvalue(), headers={"Content-Type": "audio/wav"})
    result = json.loads(answer)["data"][0]
    assert status == 200 and result["bark_probability"] is None and "too short" in result["warning"]


def test_uploads_over_the_limit_are_413(server):
    big, headers = multipart([("big.wav", b"\x00" * (1024 * 1024 + 10))])
    status, _, answer = call(f"{server.url}/v1/audio/detect", big, headers=headers)
    assert status == 413 and "limit of 1 MB" in error_of(status, answer)["message"]


def test_metrics_count_requests_batches_and_audio(server, client):
    client.audio.speech.create(model="bark", voice="test/alpha", input="Counted.", response_format="pcm",
                               extra_body={"seed": 0, **FAST})
    assert post_json(f"{server.url}/v1/audio/speech", {**SPEECH, "input": ""})[0] == 400
    status, headers, body = call(f"{server.url}/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'barkkit_requests_total{route="/v1/audio/speech",status="200"}' in text
    assert 'barkkit_requests_total{route="/v1/audio/speech",status="400"}' in text
    for name in ("barkkit_queue_depth", "barkkit_batch_size_count", "barkkit_generation_seconds_sum",
                 "barkkit_audio_generated_seconds_total"):
        assert name in text
    audio_seconds = [float(line.split()[1]) for line in text.splitlines()
                     if line.startswith("barkkit_audio_generated_seconds_total ")]
    assert audio_seconds and audio_seconds[0] > 0


def test_api_key_and_health_while_loading(fast_pipeline, tmp_path):
    gate = threading.Event()

    def slow_load(mode: str):
        assert gate.wait(120), "the test never let the load finish"
        return fast_pipeline

    holder = PipelineHolder(slow_load, mode="fast", model="tiny", plugins=fast_pipeline.plugins)
    with ServerThread(create_app(holder, ServeSettings(api_key="s3cret", data_dir=tmp_path))) as running:
        status, _, body = call(f"{running.url}/health")
        assert status == 503 and error_of(status, body)["code"] == "loading"
        status, headers, body = post_json(f"{running.url}/v1/audio/speech", SPEECH)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert error_of(status, body)["type"] == "authentication_error"
        assert post_json(f"{running.url}/v1/audio/speech", SPEECH, Authorization="Bearer wrong")[0] == 401
        status, headers, body = post_json(f"{running.url}/v1/audio/speech", SPEECH, Authorization="Bearer s3cret")
        assert status == 503 and headers["retry-after"] == "5"  # authorized, but the model is still loading
        gate.set()
        holder.ready.wait(60)
        assert call(f"{running.url}/health")[0] == 200
        assert call(f"{running.url}/metrics")[0] == 401
        assert call(f"{running.url}/metrics", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert call(f"{running.url}/")[0] == 200  # the page itself is open; it sends the key it is given


def test_a_full_queue_is_503_and_a_gone_client_is_dropped(fast_pipeline, tmp_path, model_folder, serve_plugins):
    import http.client

    with make_server(fast_pipeline, tmp_path, model_folder, serve_plugins, max_batch=1, max_queue=2,
                     max_wait_ms=0) as running:
        queue = running.app.state.queue
        gate = threading.Event()
        queue._executor.submit(gate.wait, 30)  # hold the worker: what comes next waits
        answers: list[int] = []

        def speak() -> None:
            answers.append(post_json(f"{running.url}/v1/audio/speech", SPEECH)[0])

        threads = [threading.Thread(target=speak) for _ in range(2)]
        threads[0].start()
        _until(lambda: queue.running == 1)  # the first is taken (and waits for the worker)...
        threads[1].start()
        _until(lambda: len(queue.pending) == 1)  # ...the second is queued
        gone = http.client.HTTPConnection("127.0.0.1", running.port)  # a client that will leave while queued
        gone.request("POST", "/v1/audio/speech", json.dumps({**SPEECH, "input": "Leaving."}).encode(),
                     {"Content-Type": "application/json"})
        _until(lambda: len(queue.pending) == 2)
        status, headers, body = post_json(f"{running.url}/v1/audio/speech", SPEECH)
        assert status == 503 and int(headers["retry-after"]) >= 1 and error_of(status, body)["code"] == "queue_full"
        gone.sock.shutdown(2)
        gone.close()
        _until(lambda: queue.pending[-1].future.cancelled())
        gate.set()
        for thread in threads:
            thread.join(30)
        assert answers == [200, 200]  # the others are not disturbed
        text = call(f"{running.url}/metrics")[2].decode()
        assert "barkkit_rows_dropped_total 1.0" in text
        assert 'barkkit_requests_total{route="/v1/audio/speech",status="503"} 1.0' in text


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_stream_sends_its_first_sentence_before_the_next_is_generated(fast_pipeline, tmp_path, model_folder,
                                                                        serve_plugins):
    import http.client

    with make_server(fast_pipeline, tmp_path, model_folder, serve_plugins, max_batch=8, max_wait_ms=0) as running:
        queue = running.app.state.queue
        first_gate, second_gate = threading.Event(), threading.Event()
        queue._executor.submit(first_gate.wait, 30)  # the worker waits before the first sentence...
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=60)
        connection.request("POST", "/v1/audio/speech", json.dumps(
            {**SPEECH, "input": "First part. Second part.", "stream_format": "audio", "seed": 4}).encode(),
            {"Content-Type": "application/json"})
        _until(lambda: queue.running == 1 and len(queue.pending) == 1)  # sentence 1 taken alone, sentence 2 queued
        queue._executor.submit(second_gate.wait, 30)  # ...and again before the second
        first_gate.set()
        response = connection.getresponse()
        first_chunk = response.read1(1 << 20)
        assert response.status == 200 and len(first_chunk) > 0
        assert len(queue.pending) == 1 or queue.running == 1  # the second sentence is not generated yet
        second_gate.set()
        rest = response.read()
        connection.close()
        whole = post_json(f"{running.url}/v1/audio/speech", {**SPEECH, "input": "First part. Second part.", "seed": 4})[2]
        assert first_chunk + rest == whole and len(rest) > 0
