"""``barkkit serve``: an OpenAI-compatible speech server over the public ``Pipeline`` API, with a detector endpoint,
batching of concurrent requests and a web page.

    >>> from barkkit.serve import create_app, PipelineHolder, ServeSettings
    >>> settings = ServeSettings(model="bark-small", mode="fast")
    >>> app = create_app(PipelineHolder.from_settings(settings), settings)   # any ASGI server runs it

The app keeps all its state on itself, loads its models in the background (or on the first ``/health`` or request
where the host runs no lifespan), and starts its batch queue in whatever event loop serves it; so another host can
build one per replica, e.g. Ray Serve, whose ``serve.ingress`` evaluates a builder function on each replica:

    >>> from functools import partial
    >>> from ray import serve
    >>> def build(settings): return create_app(PipelineHolder.from_settings(settings), settings)
    >>> @serve.deployment(num_replicas=2)
    ... @serve.ingress(partial(build, settings))
    ... class Barkkit:
    ...     pass
    >>> serve.run(Barkkit.bind())

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus_client, python-multipart, PyAV).
"""

from barkkit.serve.app import create_app
from barkkit.serve.holder import PipelineHolder
from barkkit.serve.settings import ServeSettings

__all__ = ["create_app", "PipelineHolder", "ServeSettings"]
