"""Plain HTTP calls (urllib) for what the openai client cannot send: malformed bodies, uploads, raw headers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any


def call(url: str, body: bytes | None = None, *, method: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; 4xx/5xx are answers here, not exceptions."""
    request = urllib.request.Request(url, body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def post_json(url: str, payload: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call(url, data, headers={"Content-Type": "application/json", **headers})


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with ``file`` parts (and text fields), and its Content-Type header."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data in files:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def error_of(status: int, body: bytes) -> dict[str, Any]:
    """OpenAI's error object of a failed answer, checked for its shape and for the absence of a stack trace."""
    assert 400 <= status < 600, status
    text = body.decode()
    assert "Traceback" not in text and 'File "' not in text
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error
