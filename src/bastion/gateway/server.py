"""Serving the gateway over HTTP with uvicorn, and stopping it gracefully (API not yet stable).

:class:`GatewayServer` binds the socket itself (so that an address in use is one clear error
before anything starts), runs uvicorn with the lifespan protocol on (the gateway's startup
prepares the models and starts its background tasks; its shutdown writes every audit record
accepted), and reports where it listens once it is ready.

Settings chosen for a security gateway rather than uvicorn's defaults:

* ``proxy_headers`` off: uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 by default, and the
  gateway binds 127.0.0.1 by default, so any local client could claim any address and step
  around the per-address rate limit. Turn it on (``forwarded_allow_ips``) only behind a proxy
  that sets the header.
* no ``Server`` header and no access log (every request is in the audit log already, with
  its key and decision; uvicorn's access log would be a second, unredacted copy).
* ``timeout_graceful_shutdown``: on SIGINT or SIGTERM, requests in flight get this long to
  finish before the lifespan shutdown flushes the audit queue (a second SIGINT stops waiting).
  Unlike uvicorn's own runner, the signal is not raised again after the graceful stop: it is
  a normal end, and :attr:`GatewayServer.stopped_by` says which signal it was.

Uvicorn is configured without its logging config (``log_config=None``): the library never
configures logging; the command line does.
"""

from __future__ import annotations

import math
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from bastion.errors import GatewayError
from bastion.gateway.app import Gateway

__all__ = ["GatewayServer", "bind"]

Listening = Callable[[str, int], None]


def bind(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port).

    Raises:
        GatewayError: the address cannot be bound (in use, not local, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says it is TCP. Without it, Nagle's algorithm and delayed ACKs hold
    # each small response about 40 ms (the benchmark measured 330 against 1,100 requests/s).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise GatewayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.stopped_by: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # As uvicorn's, except that the signal is not raised again once the server has
        # stopped: a graceful stop on SIGINT or SIGTERM is a normal end (the command exits 0).
        self.stopped_by = sig
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
        else:
            self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


class GatewayServer:
    """The gateway behind uvicorn on one socket.

    Args:
        app: the gateway (:func:`bastion.gateway.app.create_app`).
        host: the address to bind (``127.0.0.1`` by default: local clients only).
        port: the port (0: any free port; see :attr:`address` once started).
        on_listening: called with the host and port once the gateway serves.
        graceful_seconds: how long requests in flight may take to finish at shutdown.
        proxy_headers: trust ``X-Forwarded-For`` from ``forwarded_allow_ips`` (see above).
        forwarded_allow_ips: the proxies trusted when ``proxy_headers`` is on.
    """

    def __init__(
        self,
        app: Gateway,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        on_listening: Listening | None = None,
        graceful_seconds: float = 30.0,
        proxy_headers: bool = False,
        forwarded_allow_ips: str | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._on_listening = on_listening
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
            timeout_graceful_shutdown=max(1, math.ceil(graceful_seconds)),
        )
        self._server = _Server(self._config, self._started)
        self._ready = threading.Event()
        self.address: tuple[str, int] | None = None

    def _started(self) -> None:
        if self.address is not None and self._on_listening is not None:
            self._on_listening(*self.address)
        self._ready.set()

    def run(self) -> None:
        """Serve until :meth:`stop`, SIGINT or SIGTERM (signals only in the main thread).

        Raises:
            GatewayError: the socket cannot be bound, or the gateway failed to start.
        """
        sock = bind(self.host, self.port)
        bound_host, bound_port = sock.getsockname()[:2]
        self.address = (str(bound_host), int(bound_port))
        try:
            self._server.run(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits when the lifespan startup fails
            raise GatewayError("the gateway could not start (see the log above)") from exc
        finally:
            sock.close()
            self._ready.set()
        if not self._server.started:
            raise GatewayError("the gateway could not start (see the log above)")

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the gateway serves (or has failed); True if it serves."""
        self._ready.wait(timeout)
        return self._server.started and not self._server.should_exit

    def stop(self) -> None:
        """Ask the server to stop gracefully (thread-safe)."""
        self._server.should_exit = True

    @property
    def stopped_by(self) -> int | None:
        """The signal that stopped the server, if one did."""
        return self._server.stopped_by
