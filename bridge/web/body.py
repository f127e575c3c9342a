"""Reading a request body safely: at most `limit` bytes after decoding, within a deadline, in an
encoding we take (none, gzip or deflate). Anything else is a PayloadError with the 4xx to
answer, so a slow, huge or strangely encoded body costs a bounded time and memory."""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from bridge.errors import PayloadError

# 408 and 413 leave the rest of the body unread: the connection is closed, not reused
CLOSE_AFTER = (408, 413)
_CHUNK = 64 * 1024


class _Decoder:
    """Incremental gzip/deflate decoding that refuses to produce more than `limit` bytes."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.size = 0
        self._zlib: zlib._Decompress | None = None

    def feed(self, chunk: bytes) -> bytes:
        if self.encoding == "identity":
            out = chunk
        else:
            if self._zlib is None:
                self._zlib = zlib.decompressobj(self._wbits(chunk))
            try:
                out = self._zlib.decompress(chunk, self.limit - self.size + 1)
            except zlib.error as exc:
                raise PayloadError(400, f"body is not valid {self.encoding} data: {exc}") from exc
            if self._zlib.unconsumed_tail:
                raise PayloadError(413, f"decoded body is over the {self.limit}-byte limit")
        self.size += len(out)
        if self.size > self.limit:
            raise PayloadError(413, f"body is over the {self.limit}-byte limit")
        return out

    def end(self) -> bytes:
        if self._zlib is None:
            return b""
        if not self._zlib.eof:
            raise PayloadError(400, f"body ends in the middle of its {self.encoding} data")
        return b""

    def _wbits(self, first: bytes) -> int:
        if self.encoding == "gzip":
            return 16 + zlib.MAX_WBITS
        # "deflate" is meant to be zlib-wrapped, but many senders send it raw
        return zlib.MAX_WBITS if first[:1] and first[0] & 0x0F == 8 else -zlib.MAX_WBITS


def content_encoding(request: web.Request) -> str:
    """The body's one encoding, or a 415 PayloadError for anything but identity/gzip/deflate."""
    raw = request.headers.get("Content-Encoding", "").strip().lower()
    encoding = raw or "identity"
    if encoding in ("x-gzip",):
        encoding = "gzip"
    if encoding not in ("identity", "gzip", "deflate"):
        raise PayloadError(
            415, "Content-Encoding must be gzip, deflate or none", [f"got {raw[:50]!r}"]
        )
    return encoding


async def read_body(request: web.Request, limit: int, read_seconds: float) -> bytes:
    """The decoded body, or a PayloadError: 413 past `limit` bytes (decoded), 408 when it has
    not fully arrived within `read_seconds`, 400 for broken compression, 415 for an
    encoding we do not take."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadError(
            413, f"body of {request.content_length} bytes is over the {limit}-byte limit"
        )
    decoder = _Decoder(content_encoding(request), limit)
    chunks: list[bytes] = []
    content = request.content
    if content.is_eof():  # it all came with the headers (most webhooks): nothing to wait for
        while chunk := content.read_nowait(_CHUNK):
            chunks.append(decoder.feed(chunk))
        chunks.append(decoder.end())
        return b"".join(chunks)
    try:
        async with asyncio.timeout(read_seconds):
            async for chunk in request.content.iter_chunked(_CHUNK):
                chunks.append(decoder.feed(chunk))
    except TimeoutError as exc:
        raise PayloadError(408, f"body did not arrive within {read_seconds:.0f}s") from exc
    chunks.append(decoder.end())
    return b"".join(chunks)
