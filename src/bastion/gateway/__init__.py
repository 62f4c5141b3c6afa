"""bastion gateway: the hardened inference server and its guards (API not yet stable).

Build the ASGI application with :func:`create_app` and serve it with :class:`GatewayServer`
(``bastion serve`` does both); one module per guard: :mod:`~bastion.gateway.auth`,
:mod:`~bastion.gateway.ratelimit`, :mod:`~bastion.gateway.validation`,
:mod:`~bastion.gateway.extraction`, :mod:`~bastion.gateway.execution`,
:mod:`~bastion.gateway.output`, :mod:`~bastion.gateway.audit`; and
:mod:`~bastion.gateway.metrics`, :mod:`~bastion.gateway.openapi`,
:mod:`~bastion.gateway.models` (what is served).

The names below are loaded on first use (PEP 562 ``__getattr__`` over an explicit table), so
that importing one guard does not import the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion._lazy import lazy_exports

if TYPE_CHECKING:
    from bastion.gateway.app import ExtractionGuard, Gateway, create_app
    from bastion.gateway.audit import (
        REQUESTS_ACTION,
        AuditSink,
        AuditWriter,
        RequestEntry,
        payload_details,
        redact,
        request_entries,
    )
    from bastion.gateway.auth import Authenticator, KeySource, secret_from_headers
    from bastion.gateway.execution import Deadlines, Executor, ModelCost
    from bastion.gateway.extraction import ExtractionAlert, ExtractionMonitor
    from bastion.gateway.metrics import Metrics
    from bastion.gateway.models import ModelSet, Refusal, ServedEntry, load_production_models
    from bastion.gateway.openapi import openapi_document
    from bastion.gateway.output import LABEL_OUTPUT, OutputHardener
    from bastion.gateway.ratelimit import (
        MemoryRateLimiter,
        RateDecision,
        RateLimiter,
        RedisRateLimiter,
        make_rate_limiter,
    )
    from bastion.gateway.responses import Rejection
    from bastion.gateway.server import GatewayServer
    from bastion.gateway.validation import InferRequest, parse_infer

__all__ = [
    "LABEL_OUTPUT",
    "REQUESTS_ACTION",
    "AuditSink",
    "AuditWriter",
    "Authenticator",
    "Deadlines",
    "Executor",
    "ExtractionAlert",
    "ExtractionGuard",
    "ExtractionMonitor",
    "Gateway",
    "GatewayServer",
    "InferRequest",
    "KeySource",
    "MemoryRateLimiter",
    "Metrics",
    "ModelCost",
    "ModelSet",
    "OutputHardener",
    "RateDecision",
    "RateLimiter",
    "RedisRateLimiter",
    "Refusal",
    "Rejection",
    "RequestEntry",
    "ServedEntry",
    "create_app",
    "load_production_models",
    "make_rate_limiter",
    "openapi_document",
    "parse_infer",
    "payload_details",
    "redact",
    "request_entries",
    "secret_from_headers",
]

_EXPORTS: dict[str, str] = {
    "LABEL_OUTPUT": "bastion.gateway.output",
    "REQUESTS_ACTION": "bastion.gateway.audit",
    "RequestEntry": "bastion.gateway.audit",
    "request_entries": "bastion.gateway.audit",
    "AuditSink": "bastion.gateway.audit",
    "AuditWriter": "bastion.gateway.audit",
    "Authenticator": "bastion.gateway.auth",
    "Deadlines": "bastion.gateway.execution",
    "Executor": "bastion.gateway.execution",
    "ExtractionAlert": "bastion.gateway.extraction",
    "ExtractionGuard": "bastion.gateway.app",
    "ExtractionMonitor": "bastion.gateway.extraction",
    "Gateway": "bastion.gateway.app",
    "GatewayServer": "bastion.gateway.server",
    "InferRequest": "bastion.gateway.validation",
    "KeySource": "bastion.gateway.auth",
    "MemoryRateLimiter": "bastion.gateway.ratelimit",
    "Metrics": "bastion.gateway.metrics",
    "ModelCost": "bastion.gateway.execution",
    "ModelSet": "bastion.gateway.models",
    "OutputHardener": "bastion.gateway.output",
    "RateDecision": "bastion.gateway.ratelimit",
    "RateLimiter": "bastion.gateway.ratelimit",
    "RedisRateLimiter": "bastion.gateway.ratelimit",
    "Refusal": "bastion.gateway.models",
    "Rejection": "bastion.gateway.responses",
    "ServedEntry": "bastion.gateway.models",
    "create_app": "bastion.gateway.app",
    "load_production_models": "bastion.gateway.models",
    "make_rate_limiter": "bastion.gateway.ratelimit",
    "openapi_document": "bastion.gateway.openapi",
    "parse_infer": "bastion.gateway.validation",
    "payload_details": "bastion.gateway.audit",
    "redact": "bastion.gateway.audit",
    "secret_from_headers": "bastion.gateway.auth",
}


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
