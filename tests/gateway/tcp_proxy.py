"""A TCP proxy the tests control, to simulate outages of Redis and PostgreSQL.

The issue asks for outages without touching the machine's services: the gateway under test is
pointed at the proxy, which forwards to the real service until a test says otherwise.

* :meth:`TcpProxy.refuse` drops every open connection and closes each new one at once (the
  service went away: clients see a reset or an end of stream straight away);
* :meth:`TcpProxy.blackhole` keeps connections open but forwards nothing either way (the
  service hangs: clients see their timeouts);
* :meth:`TcpProxy.forward` resumes normal forwarding for new connections (clients reconnect).

The proxy runs its own asyncio loop in a daemon thread, so it serves subprocesses and code with
its own loops alike, and its methods are called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Literal

Mode = Literal["forward", "refuse", "blackhole"]


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``host:port`` while the test allows it.

    Args:
        host: the real service's host.
        port: the real service's port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode: Mode = "forward"
        self.port = 0
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        """Listen on an ephemeral loopback port (:attr:`port`) and start forwarding."""
        self._thread.start()
        self._call(self._start())
        return self

    def forward(self) -> None:
        """Forward new connections again (after :meth:`refuse` or :meth:`blackhole`)."""
        self._call(self._set_mode("forward"))

    def refuse(self) -> None:
        """Drop every open connection and close each new one at once."""
        self._call(self._set_mode("refuse"))

    def blackhole(self) -> None:
        """Drop every open connection; accept new ones but never answer."""
        self._call(self._set_mode("blackhole"))

    def drop_connections(self) -> None:
        """Close every open connection, keeping the mode."""
        self._call(self._drop())

    def stop(self) -> None:
        """Close every connection and the listener, and end the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set_mode(self, mode: Mode) -> None:
        if mode != "forward":
            await self._drop()
        self.mode = mode

    async def _drop(self) -> None:
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()

    async def _stop(self) -> None:
        await self._drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "refuse":
            _abort(writer)
            return
        self._writers.add(writer)
        if self.mode == "blackhole":
            await _drain_into_nothing(reader)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            _abort(writer)
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(
            self._pump(reader, upstream_writer),
            self._pump(upstream_reader, writer),
            return_exceptions=True,
        )
        for end in (writer, upstream_writer):
            self._writers.discard(end)
            _abort(end)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "forward":
                    writer.write(data)
                    await writer.drain()
                # blackhole: read and discard, so neither side sees an answer
        finally:
            _abort(writer)


async def _drain_into_nothing(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
