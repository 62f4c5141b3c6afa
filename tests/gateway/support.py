"""Helpers of the gateway tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from bastion.artifacts.served_model import TensorSpec
from bastion.config import ExtractionSettings, GatewaySettings
from bastion.core.audit import AuditRecord
from bastion.core.principals import KeyStore, KeyTable
from bastion.errors import AuditError, StorageError
from bastion.gateway.app import Gateway
from bastion.gateway.audit import RequestEntry, request_entries


class SlowModel:
    """A ServedModel whose predict sleeps ``delay`` seconds (after ``fast_calls`` quick ones)."""

    platform = "test-slow"
    inputs = (TensorSpec("x", "FP32", (-1, 4)),)
    outputs = (TensorSpec("scores", "FP32", (-1, 2)),)
    input_range = (0.0, 1.0)
    classes = ("a", "b")

    def __init__(self, delay: float, fast_calls: int = 0) -> None:
        self.delay = delay
        self.fast_calls = fast_calls
        self.calls = 0
        self.release = threading.Event()

    def predict(self, batch: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        self.calls += 1
        if self.calls > self.fast_calls:
            self.release.wait(self.delay)
        return np.tile([0.25, 0.75], (batch.shape[0], 1))


@dataclass(frozen=True)
class Keys:
    """Secrets of keys of every kind, and the table the gateway authenticates against."""

    table: KeyTable
    secrets: dict[str, str]
    ids: dict[str, str]
    store: KeyStore = field(repr=False)

    def headers(self, name: str, *, scheme: str = "bearer") -> dict[str, str]:
        secret = self.secrets[name]
        if scheme == "bearer":
            return {"Authorization": f"Bearer {secret}"}
        return {"X-API-Key": secret}


class MemorySink:
    """An audit sink in memory that can be made to fail like an unreachable database."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.down = False
        self.calls = 0

    def append_many(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        self.calls += 1
        if self.down:
            raise AuditError("cannot append to the audit log: down") from StorageError("down")
        self.records.extend(records)
        return list(records)

    def actions(self, action: str) -> list[AuditRecord]:
        return [r for r in self.records if r.action == action]

    def requests(self) -> list[RequestEntry]:
        """One entry per request, from the gateway.requests records."""
        return request_entries(self.records)


GatewayFactory = Callable[..., Gateway]


def settings(**overrides: Any) -> GatewaySettings:
    """Gateway settings for tests: extraction off and generous limits unless overridden."""
    values: dict[str, Any] = {
        "extraction": ExtractionSettings(enabled=False),
        "audit_flush_seconds": 0.02,
        "rate_limit": {"per_key_per_minute": 10_000, "per_address_per_minute": 10_000},
    }
    values.update(overrides)
    return GatewaySettings.model_validate(values)


@asynccontextmanager
async def serving(gateway: Gateway, address: str = "10.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """Start ``gateway`` (lifespan startup), yield a client from ``address``, shut it down."""
    async with gateway, client_for(gateway, address) as client:
        yield client


def client_for(gateway: Gateway, address: str = "10.0.0.1") -> httpx.AsyncClient:
    """An HTTP client calling ``gateway`` in process, from the client address ``address``."""
    transport = httpx.ASGITransport(app=gateway, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def infer_body(
    data: list[float] | list[list[float]], *, rows: int = 1, **extra: Any
) -> dict[str, Any]:
    """An OIP v2 request for the digits model."""
    return {
        "inputs": [{"name": "pixels", "shape": [rows, 64], "datatype": "FP32", "data": data}],
        **extra,
    }


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` (yielding to the loop) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
