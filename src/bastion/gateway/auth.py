"""Authentication and authorization guard: API keys, roles and per-model scope (API not yet stable).

A request carries its key as ``Authorization: Bearer <key>`` (RFC 6750) or ``X-API-Key: <key>``.
It is checked against an in-memory :class:`~bastion.core.principals.KeyTable`, never the
database: the table is reloaded off the request path every ``gateway.key_refresh_seconds`` (in
a worker thread), so a revocation reaches every replica within that interval and a request
costs one SHA-256 and a dictionary lookup.

Every failure looks the same to the client: ``401 {"error": "unauthorized"}`` with
``WWW-Authenticate: Bearer``, whether the key was missing, malformed, unknown, revoked or
expired (the reason goes to the audit log only; the table compares in constant time whether or
not the key id exists). A known key without the right permission, or outside its model scope,
gets ``403 {"error": "forbidden"}`` (OWASP API Security Top 10 2023, API2 "Broken
Authentication" and API5 "Broken Function Level Authorization").

Fail closed: if the key table cannot be reloaded for three refresh intervals (the database is
down), keyed requests are answered ``503`` until it can, unless ``gateway.fail_open`` is set, in
which case the last table keeps being used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bastion.core.principals import KeyTable, Permission, Principal
from bastion.errors import AuthenticationError, AuthorizationError, BastionError
from bastion.gateway.responses import Rejection

__all__ = ["Authenticator", "KeySource", "secret_from_headers"]

logger = logging.getLogger(__name__)

#: A fixed key table, or a function returning a fresh one (``KeyStore.snapshot``).
KeySource = KeyTable | Callable[[], KeyTable]

_CHALLENGE = ((b"www-authenticate", b'Bearer realm="bastion"'),)
_STALE_INTERVALS = 3


def secret_from_headers(authorization: bytes | None, api_key: bytes | None) -> str | None:
    """The key a request presents, as ``Authorization: Bearer`` or ``X-API-Key``.

    A request presenting two different keys presents none (fail closed: which one would the
    client mean, and why would it send a second?); an empty ``X-API-Key`` beside a bearer key
    is such a second key.
    """
    bearer = None
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            bearer = value.strip()
    header = api_key.strip() if api_key is not None else None
    if bearer is not None and header is not None and bearer != header:
        return None
    chosen = bearer if bearer is not None else header
    return chosen.decode("latin-1") if chosen else None


def unauthorized(reason: str) -> Rejection:
    """The one answer to every authentication failure."""
    return Rejection(
        401, "unauthorized", reason=reason, metric="unauthenticated", headers=_CHALLENGE
    )


class Authenticator:
    """Checks keys against a key table kept fresh in the background.

    Args:
        keys: a fixed table, or a function that loads one (called in a worker thread).
        refresh_seconds: how often a loaded table is reloaded.
        fail_open: keep using the last table when reloading keeps failing.
        clock: the current time (expiry checks).
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        refresh_seconds: float = 5.0,
        fail_open: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._source = None if isinstance(keys, KeyTable) else keys
        self._table = keys if isinstance(keys, KeyTable) else KeyTable(())
        self._loaded = time.monotonic() if isinstance(keys, KeyTable) else -float("inf")
        self._refresh_seconds = refresh_seconds
        self._fail_open = fail_open
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    @property
    def size(self) -> int:
        """How many keys the current table holds."""
        return len(self._table)

    @property
    def age(self) -> float:
        """Seconds since the table was last loaded."""
        return time.monotonic() - self._loaded

    @property
    def available(self) -> bool:
        """Whether the table is fresh enough to trust (always, for a fixed table)."""
        if self._source is None:
            return True
        return self.age <= _STALE_INTERVALS * self._refresh_seconds

    def authenticate(self, secret: str | None) -> Principal:
        """The principal of ``secret``.

        Raises:
            Rejection: 401 for any bad key; 503 when the table is stale and failing closed.
        """
        if not self.available and not self._fail_open:
            raise Rejection(
                503,
                "service unavailable",
                reason="API keys could not be reloaded",
                metric="unavailable",
            )
        try:
            return self._table.authenticate(secret, now=self._clock())
        except AuthenticationError as exc:
            raise unauthorized(exc.reason) from None

    @staticmethod
    def authorize(principal: Principal, permission: Permission, model: str | None = None) -> None:
        """Require ``permission`` (on ``model``).

        Raises:
            Rejection: 403.
        """
        try:
            principal.require(permission, model)
        except AuthorizationError as exc:
            raise Rejection(403, "forbidden", reason=exc.reason, metric="forbidden") from None

    @staticmethod
    def authorize_any(
        principal: Principal, permissions: tuple[Permission, ...], model: str | None = None
    ) -> None:
        """Require one of ``permissions`` (on ``model``).

        Raises:
            Rejection: 403 naming the first permission in the reason.
        """
        if not any(principal.allows(p, model) for p in permissions):
            Authenticator.authorize(principal, permissions[0], model)

    async def refresh(self) -> None:
        """Reload the table now (in a worker thread).

        Raises:
            BastionError: the source failed; the previous table stays in use.
        """
        if self._source is None:
            return
        table = await asyncio.to_thread(self._source)
        if not isinstance(table, KeyTable):
            raise BastionError("the key source did not return a KeyTable")
        self._table = table
        self._loaded = time.monotonic()

    async def start(self) -> None:
        """Load the table once and start reloading it in the background.

        A first load that fails is logged, not raised: keyed requests are refused with 503
        (fail closed) until a reload succeeds.
        """
        if self._source is None or self._task is not None:
            return
        await self._refresh_logged()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bastion-keys")

    async def stop(self) -> None:
        """Stop reloading."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            await self._refresh_logged()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # the source is a database: any failure means "not now"
            self.failures += 1
            logger.warning("cannot reload API keys (%s); keeping the last table", exc)
