"""``barkkit serve`` as a process: it loads a model folder, answers, and exits 0 on SIGTERM after finishing the
request in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from tests.serve.conftest import free_port, model_folder  # noqa: F401  (the fixture)
from tests.serve.http_helpers import call, post_json


def test_serve_answers_then_exits_0_on_sigterm_after_the_request_in_flight(model_folder, tmp_path):  # noqa: F811
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "barkkit", "serve", "--model", str(model_folder), "--mode", "fast", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--log-level", "warning", "--shutdown-timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if call(f"{url}/health")[0] == 200:
                    break
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "the server did not become healthy"
            time.sleep(0.1)
        answers: list[tuple[int, int]] = []

        def speak() -> None:
            status, _, body = post_json(f"{url}/v1/audio/speech", {
                "model": "bark", "input": "First sentence. Second one.", "response_format": "pcm",
                "seed": 1, "max_gen_duration_s": 0.6})
            answers.append((status, len(body)))

        in_flight = threading.Thread(target=speak)
        in_flight.start()
        time.sleep(0.3)  # the request is being generated
        process.send_signal(signal.SIGTERM)
        in_flight.join(60)
        assert process.wait(60) == 0, process.stderr.read() if process.stderr else ""
        assert answers and answers[0][0] == 200 and answers[0][1] > 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_refuses_a_folder_it_cannot_speak_from(tmp_path):
    from click.testing import CliRunner

    from barkkit.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path), "--port", str(free_port()),
                                      "--log-level", "critical", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "vocab.txt" in lines[0], result.stderr
