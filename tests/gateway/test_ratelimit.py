"""The rate-limit guard: sliding-window counter per key and per address, in memory and in Redis."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import pytest
from tests.gateway.tcp_proxy import TcpProxy

from bastion.config import GatewaySettings, RateLimitSettings
from bastion.errors import ServiceUnavailableError
from bastion.gateway.ratelimit import (
    MemoryRateLimiter,
    RateDecision,
    RedisRateLimiter,
    client_network,
    make_rate_limiter,
)

T = TypeVar("T")


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def reference(
    limit: int, hits: list[float], now: float, window: float = 60.0
) -> tuple[bool, float]:
    """The sliding-window counter written out from its definition (Cloudflare 2017).

    ``hits`` are the accepted requests' times. Returns whether one more fits at ``now`` and the
    estimate of requests in the last window.
    """
    index = math.floor(now / window)
    current = sum(1 for t in hits if math.floor(t / window) == index)
    previous = sum(1 for t in hits if math.floor(t / window) == index - 1)
    estimate = previous * (1 - (now / window - index)) + current
    return estimate + 1 <= limit, estimate


# --- in memory ---------------------------------------------------------------------------------


def test_exactly_the_limit_in_a_fresh_window_then_refused_with_retry_after() -> None:
    limiter = MemoryRateLimiter(5, 100)
    decisions = [limiter.check_now("k", "10.0.0.1", 10.0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[5]
    assert refused.scope == "key"
    # Five in window [0, 60): the next window must be 1/5 gone before 5 * (1 - f) <= 4.
    assert refused.retry_after == pytest.approx(50 + 12)
    assert decisions[0] == RateDecision(True, 0.0, "", 4)


def test_previous_window_weighs_in_proportion() -> None:
    limiter = MemoryRateLimiter(10, 1000)
    for _ in range(10):
        assert limiter.check_now("k", "a", 50.0).allowed
    # Half-way through the next window the ten count as five: five more fit.
    allowed = [limiter.check_now("k", "a", 90.0).allowed for _ in range(6)]
    assert allowed == [True] * 5 + [False]


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_the_definition_and_retry_after_is_the_earliest_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    limit = int(rng.integers(1, 13))
    limiter = MemoryRateLimiter(limit, 10_000)
    hits: list[float] = []
    now = float(rng.uniform(0, 60))
    for _ in range(300):
        now += float(rng.exponential(40 / limit))
        expected, _ = reference(limit, hits, now)
        decision = limiter.check_now("k", "a", now)
        assert decision.allowed is expected
        if decision.allowed:
            hits.append(now)
            continue
        # Retrying at retry_after succeeds and a little earlier does not (no other requests).
        wait = decision.retry_after
        assert reference(limit, hits, now + wait + 1e-6)[0]
        if wait > 0.01:
            assert not reference(limit, hits, now + wait - 0.01)[0]


def test_rotating_keys_from_one_address_is_caught_by_the_address_limit() -> None:
    limiter = MemoryRateLimiter(100, 20)
    decisions = [limiter.check_now(f"key-{n}", "203.0.113.9", 5.0) for n in range(50)]
    assert sum(d.allowed for d in decisions) == 20
    assert {d.scope for d in decisions[20:]} == {"address"}
    # Another address with one of those keys is not affected.
    assert limiter.check_now("key-0", "203.0.113.10", 5.0).allowed


def test_rotating_ipv6_addresses_within_a_64_is_one_address() -> None:
    limiter = MemoryRateLimiter(1000, 10)
    decisions = [limiter.check_now("k", f"2001:db8:1:2::{n:x}", 5.0) for n in range(15)]
    assert sum(d.allowed for d in decisions) == 10
    assert limiter.check_now("k", "2001:db8:1:3::1", 5.0).allowed  # another /64


@pytest.mark.parametrize(
    ("address", "counted"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:0db8:0001:0002::/64"),
        ("2001:db8:1:2::1%eth0", "2001:0db8:0001:0002::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("not:an:address", "not:an:address"),
        ("unix-socket", "unix-socket"),
    ],
)
def test_client_network(address: str, counted: str) -> None:
    assert client_network(address) == counted


def test_refused_requests_count_against_neither_limit() -> None:
    limiter = MemoryRateLimiter(3, 5)
    for _ in range(3):
        assert limiter.check_now("k1", "a", 1.0).allowed
    first = limiter.check_now("k1", "a", 1.0)
    for _ in range(100):  # hammering with the exhausted key
        limiter.check_now("k1", "a", 1.0)
    assert limiter.check_now("k1", "a", 1.0).retry_after == first.retry_after
    # The address was charged only for the three accepted requests: two more fit.
    assert [limiter.check_now("k2", "a", 1.0).allowed for _ in range(3)] == [True, True, False]


def test_both_refusing_reports_the_key_and_the_longer_wait() -> None:
    limiter = MemoryRateLimiter(2, 2)
    limiter.check_now("k", "a", 0.0)
    limiter.check_now("k", "a", 30.0)
    decision = limiter.check_now("k", "a", 30.0)
    assert (decision.allowed, decision.scope) == (False, "key")
    assert decision.retry_after == pytest.approx(30.0 + 30.0)


def test_idle_entries_expire() -> None:
    limiter = MemoryRateLimiter(10, 10)
    for n in range(500):
        limiter.check_now(f"k{n}", f"10.0.{n // 256}.{n % 256}", 1.0)
    assert limiter.sizes()["keys"] == 500
    # Two windows later the old entries count nothing; the next updates sweep them out.
    for n in range(300):
        limiter.check_now("fresh", "10.9.9.9", 125.0 + n * 0.001)
    assert limiter.sizes() == {"keys": 1, "addresses": 1, "evictions": 0}


def test_tables_are_capped() -> None:
    limiter = MemoryRateLimiter(10, 10, max_entries=100)
    for n in range(10_000):
        limiter.check_now(f"k{n}", f"a{n}", 1.0 + n * 1e-4)
    sizes = limiter.sizes()
    assert sizes["keys"] == sizes["addresses"] == 100
    assert sizes["evictions"] == 2 * (10_000 - 100)


def test_filling_the_table_does_not_reset_a_live_attackers_counter() -> None:
    limiter = MemoryRateLimiter(1000, 10, max_entries=50)
    for _ in range(10):
        assert limiter.check_now("attacker-key", "198.51.100.7", 1.0).allowed
    assert not limiter.check_now("attacker-key", "198.51.100.7", 1.0).allowed
    # The attacker fills the address table with fresh addresses (one request each): the
    # candidates for eviction are compared by count, and the fresh ones count less.
    for n in range(5_000):
        address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        assert limiter.check_now("attacker-key", address, 2.0).allowed is (n < 990)
    decision = limiter.check_now("other-key", "198.51.100.7", 2.0)
    assert (decision.allowed, decision.scope) == (False, "address")
    assert limiter.sizes()["addresses"] == 50


def test_check_uses_the_clock_when_no_time_is_given() -> None:
    now = [100.0]
    limiter = MemoryRateLimiter(1, 10, clock=lambda: now[0])
    assert run(limiter.check("k", "a")).allowed
    assert not run(limiter.check("k", "a")).allowed
    now[0] += 120.0
    assert run(limiter.check("k", "a")).allowed
    run(limiter.close())


def test_factory_picks_memory_without_redis_url() -> None:
    settings = GatewaySettings(rate_limit=RateLimitSettings(per_key_per_minute=7))
    limiter = make_rate_limiter(settings, "")
    assert isinstance(limiter, MemoryRateLimiter)
    assert (limiter.per_key, limiter.per_address) == (7, 100)


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryRateLimiter(0, 10)


# --- Redis ---------------------------------------------------------------------------------------


def redis_limiter(url: str, prefix: str, per_key: int, per_address: int, **kw: Any) -> Any:
    return RedisRateLimiter(per_key, per_address, url, prefix=prefix, **kw)


@pytest.mark.services
def test_factory_picks_redis_with_its_prefix(redis_url: str, redis_prefix: str) -> None:
    settings = GatewaySettings(rate_limit=RateLimitSettings(redis_prefix=redis_prefix))
    limiter = make_rate_limiter(settings, redis_url)
    assert isinstance(limiter, RedisRateLimiter)
    assert limiter.prefix == redis_prefix
    run(limiter.close())


@pytest.mark.services
@pytest.mark.parametrize("max_batch", [1, 256])
def test_redis_script_decides_as_the_memory_limiter(
    redis_url: str, redis_prefix: str, max_batch: int
) -> None:
    """Same stream, same explicit times: the Lua script and the Python code agree exactly."""
    rng = np.random.default_rng(max_batch)
    keys = [f"key-{n}" for n in range(4)]
    addresses = ["10.0.0.1", "10.0.0.2", "2001:db8::1"]
    stream: list[tuple[str, str, float]] = []
    now = 1_000_000.0 + float(rng.uniform(0, 60))
    for _ in range(400):
        now += float(rng.exponential(0.4))
        stream.append((keys[rng.integers(4)], addresses[rng.integers(3)], now))
    memory = MemoryRateLimiter(9, 14)

    async def main() -> list[RateDecision]:
        limiter = redis_limiter(redis_url, redis_prefix, 9, 14, max_batch=max_batch)
        try:
            # Sent concurrently in groups: each group goes to Redis as batches.
            decisions: list[RateDecision] = []
            for start in range(0, len(stream), 25):
                group = stream[start : start + 25]
                decisions += await asyncio.gather(
                    *(limiter.check(k, a, now=t) for k, a, t in group)
                )
            if max_batch == 1:
                assert limiter.round_trips == len(stream)
            else:
                assert limiter.round_trips < len(stream) / 5
            return decisions
        finally:
            await limiter.close()

    decisions = run(main())
    expected = [memory.check_now(k, a, t) for k, a, t in stream]
    assert sum(d.allowed for d in decisions) not in (0, len(stream))
    for got, want in zip(decisions, expected, strict=True):
        assert (got.allowed, got.scope, got.remaining) == (want.allowed, want.scope, want.remaining)
        assert got.retry_after == pytest.approx(want.retry_after, abs=0.001)


@pytest.mark.services
def test_two_limiters_share_one_limit_through_redis(redis_url: str, redis_prefix: str) -> None:
    async def main() -> list[RateDecision]:
        a = redis_limiter(redis_url, redis_prefix, 25, 1000)
        b = redis_limiter(redis_url, redis_prefix, 25, 1000)
        try:
            calls = [(a if n % 2 else b).check("shared", f"10.1.0.{n}") for n in range(40)]
            return list(await asyncio.gather(*calls))
        finally:
            await a.close()
            await b.close()

    decisions = run(main())
    assert sum(d.allowed for d in decisions) == 25
    assert all(d.scope == "key" and d.retry_after > 0 for d in decisions if not d.allowed)


@pytest.mark.services
def test_keys_expire_in_redis(redis_url: str, redis_prefix: str) -> None:
    import redis

    run(_one_check(redis_url, redis_prefix))
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{redis_prefix}*"))
        assert len(keys) == 2  # one per scope, in the current window
        assert all(0 < client.ttl(k) <= 121 for k in keys)


async def _one_check(url: str, prefix: str) -> None:
    limiter = redis_limiter(url, prefix, 5, 5)
    try:
        assert (await limiter.check("k", "a")).allowed
    finally:
        await limiter.close()


def _timed(call: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[float]]:
    async def timed() -> float:
        started = time.perf_counter()
        await call()
        return time.perf_counter() - started

    return timed


@pytest.mark.services
@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
def test_redis_outage_fails_closed_then_recovers_by_itself(
    redis_url: str, redis_prefix: str, outage: str
) -> None:
    target = urlsplit(redis_url)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"

        async def main() -> None:
            limiter = redis_limiter(url, redis_prefix, 100, 100, retry_interval=0.2)
            try:
                assert (await limiter.check("k", "a")).allowed
                getattr(proxy, outage)()
                started = time.perf_counter()
                results = await asyncio.gather(
                    *(limiter.check("k", "a") for _ in range(20)), return_exceptions=True
                )
                # Every waiting request fails together, within about one socket timeout.
                assert all(isinstance(r, ServiceUnavailableError) for r in results)
                assert time.perf_counter() - started < 1.0
                # While the failure is recent, checks fail at once without a round trip.
                trips = limiter.round_trips
                with pytest.raises(ServiceUnavailableError):
                    await limiter.check("k", "a")
                assert limiter.round_trips == trips
                proxy.forward()
                await asyncio.sleep(0.25)
                decision = await limiter.check("k", "a")
                assert decision.allowed
                # Redis kept the count across the outage: two accepted so far.
                assert decision.remaining == 100 - 2
            finally:
                await limiter.close()

        run(main())


class _ForgetfulRedis:
    """A Redis client whose script cache was flushed (a restart): NOSCRIPT once."""

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.calls = 0

    async def evalsha(self, sha: str, numkeys: int, *args: object) -> bytes:
        from redis.exceptions import NoScriptError

        self.calls += 1
        if not self.loaded:
            raise NoScriptError("NOSCRIPT No matching script.")
        assert sha == hashlib.sha1(self.loaded[0].encode(), usedforsecurity=False).hexdigest()
        return b"1 0 0 4"

    async def script_load(self, script: str) -> str:
        self.loaded.append(script)
        return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()

    async def aclose(self) -> None:
        pass


def test_a_flushed_script_cache_is_reloaded_once() -> None:
    client = _ForgetfulRedis()
    limiter = RedisRateLimiter(5, 5, client=client)  # type: ignore[arg-type]

    async def main() -> list[RateDecision]:
        try:
            return [await limiter.check("k", "a"), await limiter.check("k", "a")]
        finally:
            await limiter.close()

    assert run(main()) == [RateDecision(True, 0.0, "", 4)] * 2
    assert (len(client.loaded), client.calls) == (1, 3)


class _GarbledRedis(_ForgetfulRedis):
    """Answers something that is not the script's reply."""

    async def evalsha(self, sha: str, numkeys: int, *args: object) -> bytes:
        return b"1 0"


def test_an_unexpected_reply_fails_closed() -> None:
    limiter = RedisRateLimiter(5, 5, client=_GarbledRedis())  # type: ignore[arg-type]

    async def main() -> list[object]:
        try:
            return await asyncio.gather(
                *(limiter.check("k", "a") for _ in range(3)), return_exceptions=True
            )
        finally:
            await limiter.close()

    assert all(isinstance(r, ServiceUnavailableError) for r in run(main()))
