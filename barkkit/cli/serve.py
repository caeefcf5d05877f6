"""``barkkit serve``: the speech server (``barkkit.serve``) on uvicorn."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from barkkit.cli.scale import ray_option, set_threads, threads_option
from barkkit.cli.state import CliState
from barkkit.errors import BarkkitError
from barkkit.pipeline import MODES

__all__ = ["serve"]


def _uvicorn() -> Any:
    try:
        import uvicorn

        import barkkit.serve  # noqa: F401  (FastAPI, prometheus_client, ...)
    except ImportError as exc:
        raise BarkkitError(f"barkkit serve needs the serve extra ({exc.name} is missing): pip install 'barkkit[serve]'") from None
    return uvicorn


def _server(uvicorn: Any, config: Any) -> Any:
    class Server(uvicorn.Server):
        """uvicorn re-raises a caught SIGTERM after its graceful shutdown (the process then dies of it); SIGTERM here
        is the way to stop the service, so the shutdown it asks for ends the command normally, with status 0."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
                captured.remove(sig)

    return Server(config)


@click.command("serve")
@click.option("-m", "--model", default=None, help="Model name (bark, bark-small), hub id or local folder.  [default: bark-small]")
@click.option("--mode", type=click.Choice(MODES), default=None, help="Default mode of requests (a request may ask for the other; it loads on first use).  [default: exact]")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False), default=None, help="TOML pipeline spec naming stages and decoder.")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--api-key", default=None, envvar="BARKKIT_API_KEY", help="Require 'Authorization: Bearer KEY' on the API (also $BARKKIT_API_KEY).")
@click.option("--max-batch", type=click.IntRange(1, 256), default=8, show_default=True, help="Most rows (sentences) per generate_batch call.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 60_000), default=50, show_default=True, help="Longest wait for a batch to fill.")
@click.option("--max-queue", type=click.IntRange(1), default=64, show_default=True, help="Queued rows beyond which requests get 503 + Retry-After.")
@click.option("--max-input-chars", type=click.IntRange(1), default=4096, show_default=True, help="Longest 'input' a request may send.")
@click.option("--max-upload-mb", type=click.FloatRange(0.001), default=25, show_default=True, help="Largest upload (detect, voices).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("barkkit-data"), show_default=True, help="Where uploaded voices are kept (DATA_DIR/voices).")
@click.option("--semantic-stage", default=None, help="POST /v1/voices: the audio-to-semantic stage (needed only when several are installed).")
@click.option("--hubert", default=None, help="POST /v1/voices with hubert.semantic: HuBERT, a hub id or local transformers folder.")
@click.option("--quantizer", default=None, help="POST /v1/voices with hubert.semantic: the quantizer, a local file or hub-id:filename.")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=30, show_default=True, help="Seconds SIGTERM waits for requests in flight.")
@ray_option
@click.option("--replicas", type=click.IntRange(min=1), default=None, help="With --ray: copies of the server behind Ray Serve's HTTP proxy.  [default: 1]")
@threads_option
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info", show_default=True)
@click.pass_obj
def serve(state: CliState, model: str | None, mode: str | None, spec_file: str | None, device: str, host: str, port: int,
          api_key: str | None, max_batch: int, max_wait_ms: float, max_queue: int, max_input_chars: int,
          max_upload_mb: float, data_dir: Path, semantic_stage: str | None, hubert: str | None, quantizer: str | None,
          shutdown_timeout: float, log_level: str, ray_address: str | None = None, replicas: int | None = None,
          threads: int | None = None) -> None:
    """Serve speech over HTTP: OpenAI's POST /v1/audio/speech, voices, detection, metrics and a web page at /.

    Concurrent requests are batched through the engine; each answer equals its request run alone. GET /health
    answers 503 until the model is loaded. SIGTERM finishes the requests in flight, then exits 0.

    \b
    Examples:
      barkkit serve --model bark-small --mode fast
      barkkit serve --model ./bark-small --port 8080 --api-key secret --max-batch 8 --max-wait-ms 50
      curl -s localhost:8000/v1/audio/speech -H 'Content-Type: application/json' \\
           -d '{"model": "bark", "input": "Hello there.", "voice": "v2/en_speaker_6", "response_format": "wav"}' -o hello.wav
    """
    if ray_address is None and replicas is not None:
        raise BarkkitError("--replicas only works with --ray ADDRESS (Ray Serve replicas on a cluster)")
    uvicorn = _uvicorn()
    from barkkit.serve import PipelineHolder, ServeSettings, create_app

    settings = ServeSettings(model=model, mode=mode, spec=spec_file, device=device, host=host, port=port,
                             api_key=api_key or None, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                             max_input_chars=max_input_chars, max_upload_mb=max_upload_mb, data_dir=data_dir,
                             semantic_stage=semantic_stage, hubert=hubert, quantizer=quantizer,
                             shutdown_timeout_s=shutdown_timeout)
    if ray_address is not None:
        from barkkit.scale.serving import serve_until_stopped

        serve_until_stopped(settings, address=ray_address, replicas=replicas or 1, threads=threads or 1,
                            announce=lambda line: click.echo(line, err=True))
        return
    set_threads(threads)
    holder = PipelineHolder.from_settings(settings, plugins=state.plugins)
    config = uvicorn.Config(create_app(holder, settings), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=shutdown_timeout, lifespan="on")
    server = _server(uvicorn, config)

    def stop_if_load_fails() -> None:  # a server that can never speak should not keep answering 503
        holder.ready.wait()
        if holder.error is not None:
            server.should_exit = True

    threading.Thread(target=stop_if_load_fails, name="barkkit-load-watch", daemon=True).start()
    server.run()
    if holder.error is not None:
        error = holder.error
        raise error if isinstance(error, BarkkitError) else BarkkitError(f"could not load the model: {error}")
