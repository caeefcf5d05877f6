"""Every failure as OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}`` and a 4xx/5xx status.

Library errors (``barkkit.errors``) carry one-line messages written for people; they map to 400 (bad request) or
404/501 where that is what they mean. Anything else is a 500 whose body names no internals (no stack trace).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse

from barkkit.errors import AudioError, BarkkitError, PipelineError, PluginError, TokenError, VoiceError, WeightsError

__all__ = ["ApiError", "error_response", "from_exception"]

log = logging.getLogger("barkkit.serve")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 501: "not_implemented_error", 503: "server_unavailable"}


class ApiError(Exception):
    """An HTTP failure with OpenAI's fields. ``headers`` go out with it (``Retry-After``, ``WWW-Authenticate``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def from_exception(exc: BaseException, *, param: str | None = None) -> ApiError:
    """The ``ApiError`` for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BarkkitError):
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, VoiceError):
            return ApiError(400, message, param=param or "voice", code="invalid_voice")
        if isinstance(exc, PluginError) and "audio-to-semantic" in message:
            return ApiError(501, message, param=param, code="voice_making_unavailable")
        if isinstance(exc, WeightsError):  # the server lacks weights (HuBERT's for voice making, say): not the client's fault
            return ApiError(503, message, param=param, code="weights_unavailable")
        if isinstance(exc, (AudioError, TokenError)):
            return ApiError(400, message, param=param or "file", code="invalid_audio")
        code = "invalid_option" if isinstance(exc, PipelineError) else "invalid_request"
        return ApiError(400, message, param=param, code=code)
    log.error("internal error while serving a request", exc_info=exc)
    return ApiError(500, f"internal server error ({type(exc).__name__}); the server log has the details",
                    code="internal_error")
