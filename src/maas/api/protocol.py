"""uvicorn's httptools protocol with a cap on the request head (431 past it).

httptools itself buffers a header of any length: a client could send one of a
gigabyte and hold that memory. This subclass counts the bytes received while a
request's head is incomplete and answers ``431 Request Header Fields Too Large``
(then closes) once they pass the cap, before the application sees anything.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["limited_http_protocol"]


def limited_http_protocol(max_head_bytes: int) -> type[HttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._in_body = False
            self._tail = b""  # the last bytes of the head so far: its end may straddle reads

        def data_received(self, data: bytes) -> None:
            if not self._in_body:
                # Only the head counts: a read often carries the body's start too, and the
                # blank line that ends the head may be split between two reads.
                seen = self._tail + data
                end = seen.find(b"\r\n\r\n")
                self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
                self._tail = seen[-3:]
                if self._head_bytes > max_head_bytes:
                    self._refuse()
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            self._head_bytes = 0
            self._tail = b""
            super().on_message_complete()

        def _refuse(self) -> None:
            message = f"request head exceeds {max_head_bytes} bytes".encode()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: " + str(len(message)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + message
            )
            self.transport.close()

    return LimitedHttpToolsProtocol
