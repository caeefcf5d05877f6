"""Load on ``barkkit serve``: N concurrent clients for a bounded time, then the same texts one at a time.

    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --clients 4 --seconds 60
    python benchmarks/serve_load.py --bark-small-shapes --mode fast --clients 4 --seconds 60   # starts its own server

Every request streams (``stream_format: "audio"``, ``pcm``) a two-sentence text with its own seed, so one request
gives both its time to first audio byte (one sentence generated) and its latency (the whole text). The concurrent
phase starts requests for ``--seconds`` and lets the last ones finish; the sequential phase sends the texts the
concurrent phase completed (at most ``--baseline-requests``), one after another; ``--rounds`` repeats the pair,
interleaved, since the load of a shared machine drifts. Printed for each phase: requests
per minute, seconds of audio per second of wall time, p50/p95 latency and p50/p95 time to first byte.

``--bark-small-shapes`` builds random weights of bark-small's shapes (12 layers, 12 heads, 768 wide, the real
vocabularies; ``benchmarks/harness.py``) and a random EnCodec, and runs ``barkkit serve`` on them in a subprocess
(``--max-batch`` = ``--clients``). Random weights say nothing about the audio, only about the time it takes: the
lengths are fixed by ``--max-gen-duration-s`` (random models rarely stop early).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_RATE = 24_000
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.",
             "A journey of a thousand miles begins with a single step.", "Every cloud has a silver lining today.",
             "Practice makes perfect, or so they say.", "The early bird catches the worm at dawn.",
             "Actions speak louder than words in the end.", "Curiosity killed the cat, but it learned a lot."]


@dataclass
class Result:
    text_index: int
    started: float
    ttfb_s: float
    latency_s: float
    audio_s: float


def texts(n: int) -> list[str]:
    return [f"{SENTENCES[i % len(SENTENCES)]} {SENTENCES[(i + 3) % len(SENTENCES)]}" for i in range(n)]


def one_request(url: str, text: str, seed: int, options: dict, api_key: str | None) -> tuple[float, float, int]:
    """(time to first body byte, total time, pcm bytes) of one streamed request."""
    parts = urllib.parse.urlsplit(url)
    body = json.dumps({"model": "bark", "input": text, "response_format": "pcm", "stream_format": "audio",
                       "seed": seed, **options}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    began = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=600)
    try:
        connection.request("POST", "/v1/audio/speech", body, headers)
        response = connection.getresponse()
        first = response.read1(65536)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {first[:300]!r}")
        ttfb = time.perf_counter() - began
        total = len(first) + len(response.read())
        return ttfb, time.perf_counter() - began, total
    finally:
        connection.close()


def concurrent_phase(url: str, all_texts: list[str], clients: int, seconds: float, options: dict,
                     api_key: str | None) -> tuple[list[Result], float]:
    results: list[Result] = []
    lock = threading.Lock()
    next_index = [0]
    began = time.perf_counter()

    def client() -> None:
        while time.perf_counter() - began < seconds:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= len(all_texts):
                return
            started = time.perf_counter() - began
            ttfb, latency, n_bytes = one_request(url, all_texts[index], 1000 + index, options, api_key)
            with lock:
                results.append(Result(index, started, ttfb, latency, n_bytes / 2 / SAMPLE_RATE))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results, key=lambda r: r.text_index), time.perf_counter() - began


def sequential_phase(url: str, all_texts: list[str], indices: list[int], options: dict,
                     api_key: str | None) -> tuple[list[Result], float]:
    results = []
    began = time.perf_counter()
    for index in indices:
        started = time.perf_counter() - began
        ttfb, latency, n_bytes = one_request(url, all_texts[index], 1000 + index, options, api_key)
        results.append(Result(index, started, ttfb, latency, n_bytes / 2 / SAMPLE_RATE))
    return results, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(name: str, results: list[Result], wall_s: float) -> dict:
    latency = [r.latency_s for r in results]
    ttfb = [r.ttfb_s for r in results]
    audio = sum(r.audio_s for r in results)
    row = {"phase": name, "requests": len(results), "wall_s": round(wall_s, 1),
           "requests_per_min": round(60 * len(results) / wall_s, 2), "audio_s_per_s": round(audio / wall_s, 3),
           "latency_p50_s": round(percentile(latency, 0.5), 2), "latency_p95_s": round(percentile(latency, 0.95), 2),
           "ttfb_p50_s": round(percentile(ttfb, 0.5), 2), "ttfb_p95_s": round(percentile(ttfb, 0.95), 2),
           "audio_s": round(audio, 2)}
    print(f"{name:<12} {row['requests']:>4} req in {row['wall_s']:>6.1f} s  {row['requests_per_min']:>6.2f} req/min  "
          f"{row['audio_s_per_s']:>6.3f} audio s/s  latency p50 {row['latency_p50_s']:.2f} p95 {row['latency_p95_s']:.2f} s"
          f"  TTFB p50 {row['ttfb_p50_s']:.2f} p95 {row['ttfb_p95_s']:.2f} s", flush=True)
    return row


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_bark_small_server(args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen, str]:
    """Random bark-small-shaped weights and codec in ``folder``, and ``barkkit serve`` on them."""
    import benchmarks.harness as H
    from barkkit_encodec.checkpoints import save_encodec_checkpoint

    H.write_checkpoints(H.build_reference_models("small", seed=0), folder, "small")
    save_encodec_checkpoint(folder)
    port = free_port()
    env = dict(os.environ)
    # idle OpenMP threads sleep instead of spinning: spinning threads of a busy shared machine slow torch many times
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if H.PROMPTS.is_dir():
        env["BARKKIT_VOICE_PATH"] = str(H.PROMPTS)
    command = [sys.executable, "-m", "barkkit", "serve", "--model", str(folder), "--mode", args.mode,
               "--port", str(port), "--max-batch", str(args.max_batch or args.clients), "--max-wait-ms",
               str(args.max_wait_ms), "--log-level", "warning", "--data-dir", str(folder / "data")]
    server = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, url
        except OSError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("the server did not become healthy in 10 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (else --bark-small-shapes starts one)")
    parser.add_argument("--bark-small-shapes", action="store_true", help="start a server on random bark-small-shaped weights")
    parser.add_argument("--mode", default="fast", choices=["exact", "fast"], help="with --bark-small-shapes")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60, help="how long the concurrent phase starts requests")
    parser.add_argument("--baseline-requests", type=int, default=8, help="most texts the sequential phase sends")
    parser.add_argument("--rounds", type=int, default=1, help="concurrent and sequential phases, interleaved")
    parser.add_argument("--max-batch", type=int, default=None, help="with --bark-small-shapes (default: --clients)")
    parser.add_argument("--max-wait-ms", type=float, default=50)
    parser.add_argument("--max-gen-duration-s", type=float, default=1.0, help="each sentence's length cap")
    parser.add_argument("--voice", default="v2/en_speaker_6", help="'' for none")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if not args.url and not args.bark_small_shapes:
        parser.error("give --url of a running server, or --bark-small-shapes")
    options: dict = {"max_gen_duration_s": args.max_gen_duration_s}
    server = None
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        if args.bark_small_shapes:
            server, args.url = start_bark_small_server(args, Path(tmp))
            import benchmarks.harness as H

            if not H.PROMPTS.is_dir():
                args.voice = ""  # no presets without the shared data: no voice
        if args.voice:
            options["voice"] = args.voice
        try:
            cpu = platform.processor() or platform.machine()
            print(f"# {args.url}: {args.clients} clients for {args.seconds:.0f} s, two sentences a request, "
                  f"max_gen_duration_s {args.max_gen_duration_s}; {os.cpu_count()} CPUs ({cpu}); "
                  f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
            one_request(args.url, "Warm up.", 0, options, args.api_key)  # first-use costs out of the figures
            rows, ratios = [], []
            for round_index in range(args.rounds):  # interleaved: a shared machine's load drifts between phases
                all_texts = texts(10_000 * (round_index + 1))[10_000 * round_index:]
                concurrent, concurrent_wall = concurrent_phase(args.url, all_texts, args.clients, args.seconds,
                                                               options, args.api_key)
                together = summary(f"{args.clients} clients", concurrent, concurrent_wall)
                indices = [r.text_index for r in concurrent][: args.baseline_requests]
                sequential, sequential_wall = sequential_phase(args.url, all_texts, indices, options, args.api_key)
                alone = summary("one at a time", sequential, sequential_wall)
                ratio = together["audio_s_per_s"] / alone["audio_s_per_s"] if alone["audio_s_per_s"] else float("nan")
                print(f"round {round_index + 1}: throughput, concurrent / one at a time: {ratio:.2f}x", flush=True)
                rows += [together, alone]
                ratios.append(ratio)
            if args.json:
                args.json.write_text(json.dumps({"rows": rows, "ratios": ratios, "args": vars(args)}, indent=1,
                                                default=str))
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(120)
                except subprocess.TimeoutExpired:
                    server.kill()


if __name__ == "__main__":
    main()
