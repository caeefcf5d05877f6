"""HTTP plumbing the routes share: bodies read within a size limit, and noticing a client that went away."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from barkkit.serve.errors import ApiError

__all__ = ["read_body", "ClientGone", "wait_for_rows"]


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def read_body(request: Request, limit: int, *, what: str = "request body") -> bytes:
    """The whole body, or 413 as soon as it passes ``limit`` bytes (before reading the rest)."""
    declared = request.headers.get("content-length", "")
    mb = limit / (1024 * 1024)
    too_big = ApiError(413, f"the {what} is over this server's limit of {mb:g} MB (--max-upload-mb)",
                       code="payload_too_large")
    # A body far over the limit is refused unread; one a little over is read up to the limit first, so that a
    # client still sending its last bytes gets to read the 413 (an answer before the body can end as a broken pipe).
    if declared.isdigit() and int(declared) > 2 * limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    # after the body, the server's receive() returns only when the client disconnects
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def wait_for_rows(request: Request, futures: Sequence["asyncio.Future[Any]"]) -> list[Any]:
    """The rows' results, in order; ``ClientGone`` if the client leaves first. Rows not done are cancelled on any
    exit, which drops them from the queue (``BatchQueue``)."""
    gathered = asyncio.gather(*futures)
    gathered.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved, even when abandoned
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        waited: set[asyncio.Future[Any]] = {gathered, watcher}
        done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        if gathered in done:
            return list(gathered.result())
        raise ClientGone()
    finally:
        watcher.cancel()
        for future in futures:
            if not future.done():
                future.cancel()
        if not gathered.done():
            gathered.cancel()


async def read_uploads(request: Request, limit: int, *, max_files: int = 16) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The uploaded files (``file`` parts of a multipart form, or a raw audio body) and the form's text fields.

    Returns ``([(filename, data), ...], {field: value})``. The whole body counts against ``limit``.
    """
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    body = await read_body(request, limit, what="upload")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if content_type.startswith(("application/json", "application/x-www-form-urlencoded", "text/")):
            raise ApiError(415, f"send audio as multipart/form-data with a 'file' part, or as a raw audio body; got "
                                f"{content_type.split(';')[0]}", param="file", code="unsupported_media_type")
        if not body:
            raise ApiError(400, "no audio: the request body is empty", param="file", code="missing_file")
        return [("upload", body)], {}

    async def stream() -> Any:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=16).parse()
    except MultiPartException as exc:
        raise ApiError(400, f"malformed multipart form: {exc.message}", param="file", code="invalid_form") from None
    files, fields = [], {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "file":
                raise ApiError(400, f"unexpected file field '{key}'; send files as 'file'", param=key, code="invalid_form")
            files.append((value.filename or "upload", await value.read()))
        else:
            fields[key] = value
    if not files:
        raise ApiError(400, "no audio: the form has no 'file' part", param="file", code="missing_file")
    return files, fields
