"""``barkkit serve``: an OpenAI-compatible speech server over the public ``Pipeline`` API, with a detector endpoint,
batching of concurrent requests and a web page.

    >>> from barkkit.serve import create_app, PipelineHolder, ServeSettings
    >>> settings = ServeSettings(model="bark-small", mode="fast")
    >>> app = create_app(PipelineHolder.from_settings(settings), settings)   # any ASGI server runs it

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus_client, python-multipart, PyAV).
"""

from barkkit.serve.app import create_app
from barkkit.serve.holder import PipelineHolder
from barkkit.serve.settings import ServeSettings

__all__ = ["create_app", "PipelineHolder", "ServeSettings"]
