"""Refusals and raw ASGI responses of the gateway (API not yet stable).

Every guard refuses by raising :class:`Rejection`: an HTTP status, the short generic text the
client sees, the reason that only the audit log sees, and a metric label from a fixed set.
Clients are told what class of problem it was and nothing more: never a stack trace, a model
internal or whether a key exists (ARCHITECTURE.md, "fail closed"; OWASP API Security Top 10
2023, API8 "Security Misconfiguration": verbose error messages).

Responses are written as two ASGI messages with precomputed headers: the gateway is a plain
ASGI application (no framework response objects on the hot path).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

from bastion.errors import GatewayError

__all__ = [
    "JSON_HEADERS",
    "Receive",
    "Rejection",
    "Scope",
    "Send",
    "dumps",
    "send_bytes",
    "send_error",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

_SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
)
JSON_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-type", b"application/json"),
    *_SECURITY_HEADERS,
)
_ENCODER = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), check_circular=False
)


def dumps(value: object) -> bytes:
    """Compact JSON bytes (stdlib C encoder; NaN and infinities refused)."""
    return _ENCODER.encode(value).encode("ascii")


class Rejection(GatewayError):  # noqa: N818 - a refusal, not a fault of the gateway
    """A guard refused the request.

    Args:
        status: the HTTP status to answer.
        message: the generic text the client sees (``{"error": message}``).
        reason: why, for the audit log only (may name a key id, a tensor, a limit).
        metric: the ``reason`` label of ``bastion_gateway_rejections_total``: a fixed word.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``, ``Allow``).
        tally: record it in the audit log as a count rather than one event (refusals that
            come in floods: rate limited, unavailable).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        metric: str,
        headers: Headers = (),
        tally: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or message
        self.metric = metric
        self.headers = tuple(headers)
        self.tally = tally


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: Headers = JSON_HEADERS,
    extra: Headers = (),
) -> None:
    """Send a complete response: status, headers (plus ``content-length``) and body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, *extra, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, value: object, extra: Headers = ()) -> None:
    """Send ``value`` as a JSON response."""
    await send_bytes(send, status, dumps(value), JSON_HEADERS, extra)


async def send_error(send: Send, rejection: Rejection) -> None:
    """Send a refusal as ``{"error": "<generic text>"}``."""
    await send_bytes(
        send, rejection.status, dumps({"error": rejection.message}), JSON_HEADERS, rejection.headers
    )
