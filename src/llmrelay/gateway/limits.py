"""Per-key limits (`max_parallel`, `rpm`): counted in this process, or shared by every process through Redis.

Without a `limits:` section each process counts its own (`LocalLimits`): with
`--workers N` or several replicas a key gets N times its limits. With
`limits: {store: redis://…}` every process counts in the same Redis
(`RedisLimits`):

- **Admission is one round trip**: one Lua script (EVALSHA; EVAL when the
  server does not know it yet) prunes, checks and reserves atomically: a
  concurrency slot (a sorted set of reservation ids scored by their deadline)
  and the rpm window (a sorted set of admission times, a sliding 60 s window,
  exact). It answers "admitted" or the seconds to wait. Time is Redis's own
  (`TIME`), so the clocks of the gateway hosts do not matter.
- **Completion is one round trip** (`ZREM` of the slot), in a `finally`: a
  normal end, an error, a client hang-up and a cancelled task all release.
  Keys with only `rpm` have nothing to release: no round trip.
- **A crashed process does not leak slots.** Each reservation has a deadline
  `lease` seconds ahead; a heartbeat (one pipelined round trip per process
  every lease/3 s, only while it has requests in flight) pushes the deadlines
  of its live requests forward, and the admission script prunes the expired
  ones. A killed worker's slots free themselves within `lease`.
- **Every wait is bounded** by `timeout` (connect and read). When Redis fails,
  `on_store_error` decides: `local` (default) counts in this process as if no
  store were configured, `open` admits, `closed` answers 503. After a failure
  Redis is left alone for a second (requests do not each wait for a dead
  server); the change is logged once each way and each failed call counted
  (`llmrelay_gateway_limits_store_errors_total`).

Keys without limits never reach this module (the hot path does not touch Redis).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import time
from typing import Any

from .background import Background
from .config import Key, LimitsOptions
from .encode import GatewayError

__all__ = ["LocalLimits", "RedisLimits", "Held"]

log = logging.getLogger("llmrelay.gateway")

WINDOW = 60.0  # rpm: requests per sliding minute
RETRY_DOWN = 1.0  # seconds Redis is left alone after a failure
MAX_CONNECTIONS = 128  # per process; an admission waits at most `timeout` for one (then on_store_error)
#: Failed calls to a limits store in this process, all generations (/metrics: a counter must not restart on reload)
STORE_ERRORS = [0]

# KEYS: in-flight zset, rpm zset. ARGV: reservation id, max_parallel (0: none), rpm (0: none), lease, window.
# Returns {1} (admitted), {0, 0} (max_parallel reached) or {0, seconds} (rpm reached, seconds until a slot frees).
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, maxp, rpm = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, window = tonumber(ARGV[4]), tonumber(ARGV[5])
if maxp > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= maxp then return {0, 0} end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('ZCARD', KEYS[2]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {0, math.max(1, math.ceil(tonumber(oldest[2]) + window - now))}
  end
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)
end
if maxp > 0 then
  redis.call('ZADD', KEYS[1], now + lease, id)
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
end
return {1}
"""

# KEYS: a zset of reservations (in flight; a budget's). ARGV: lease, ids...: the deadlines of these live reservations
# move `lease` ahead (XX: a reservation already released or pruned is not brought back).
RENEW = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i]) end
local ms = math.ceil(tonumber(ARGV[1]) * 1000) + 1000
local ttl = redis.call('PTTL', KEYS[1])
if ttl >= 0 and ttl < ms then redis.call('PEXPIRE', KEYS[1], ms) end  -- never shortens (a budget's set lives longer)
return 1
"""


class Held:
    """One admitted request's reservation: what to release when it ends."""

    __slots__ = ("key", "slot", "rid", "local")

    def __init__(self, key: Key, slot: str | None, rid: str, local: bool = False):
        self.key = key
        self.slot = slot  # the in-flight zset (None: nothing to release in Redis)
        self.rid = rid
        self.local = local  # counted by LocalLimits (the store was down at admission)


def _parallel(key: Key) -> GatewayError:
    return GatewayError(429, f"key {key.name!r}: {key.max_parallel} requests already in flight",
                        "rate_limit_error", {"retry-after": "1"})


def _rpm(key: Key, wait: int) -> GatewayError:
    return GatewayError(429, f"key {key.name!r}: more than {key.rpm} requests per minute",
                        "rate_limit_error", {"retry-after": str(wait)})


class _Counts:
    __slots__ = ("in_flight", "recent")

    def __init__(self) -> None:
        self.in_flight = 0
        self.recent: collections.deque[float] = collections.deque()


class LocalLimits:
    """The keys' limits counted in this process (monotonic clock, sliding rpm window)."""

    def __init__(self) -> None:
        self.counts: dict[str, _Counts] = {}

    def acquire(self, key: Key) -> None:
        lim = self.counts.get(key.name)
        if lim is None:
            lim = self.counts[key.name] = _Counts()
        if key.max_parallel is not None and lim.in_flight >= key.max_parallel:
            raise _parallel(key)
        if key.rpm is not None:
            now = time.monotonic()
            recent = lim.recent
            while recent and now - recent[0] >= WINDOW:
                recent.popleft()
            if len(recent) >= key.rpm:
                raise _rpm(key, max(1, int(WINDOW - (now - recent[0]) + 0.999)))
            recent.append(now)
        lim.in_flight += 1

    def release(self, key: Key) -> None:
        lim = self.counts.get(key.name)
        if lim is not None:
            lim.in_flight -= 1


class RedisLimits:
    """The keys' limits counted in Redis, shared by every process that uses the same store and prefix."""

    def __init__(self, options: LimitsOptions, local: LocalLimits):
        self.options = options
        self.local = local
        self.redis: Any = None  # the event loop's client for this store (_client), bound at the first admission
        self.bound = options.timeout * 3 + 0.1  # pool wait + connect + read, for the whole call
        self.shas: dict[str, str] = {}  # script text -> its SHA1, once the server has been sent it
        self.token = os.urandom(6).hex()  # this process's reservations: <token>:<n>
        self.ids = itertools.count(1)
        self.live: dict[str, set[str]] = {}  # in-flight zset -> ids of this process's requests still running
        self.beat: asyncio.Task[Any] | None = None
        self.tasks = Background()
        self.down_until = 0.0
        self.errors = 0  # Redis calls that failed (each logged at debug; the first of a run at warning)
        self.down = False

    def names(self, key: Key) -> tuple[str, str]:
        # the key's name for people reading Redis, a piece of its hash so two keys with one name stay apart;
        # {…}: both keys of a request hash to one Redis Cluster slot
        tag = f"{self.options.prefix}{{{key.name}:{key.key_hash[7:19]}}}"
        return tag + ":in_flight", tag + ":rpm"

    async def acquire(self, key: Key) -> Held:
        """Admit (a Held to release at the end) or raise GatewayError(429, or 503 when closed and Redis is down)."""
        rid = f"{self.token}:{next(self.ids)}"
        if time.monotonic() < self.down_until:
            return self._fallback(key, rid, None)
        if self.redis is None:
            self.redis = _client(self.options)
        slot, window = self.names(key)
        args = (rid, key.max_parallel or 0, key.rpm or 0, self.options.lease, WINDOW)
        try:
            async with asyncio.timeout(self.bound):
                result = await self._acquire(slot, window, args)
        except asyncio.CancelledError:  # (shutdown) the script may have run: give back what it may have taken
            if key.max_parallel:
                self.tasks.spawn(self._zrem(slot, rid))
            raise
        except Exception as exc:  # redis.RedisError, OSError, TimeoutError: the store failed, not the request
            if key.max_parallel and isinstance(exc, TimeoutError):  # the script may have run, its answer late
                self.tasks.spawn(self._zrem(slot, rid))
            return self._fallback(key, rid, exc)
        self.store_ok()
        if result[0] != 1:
            raise _parallel(key) if result[1] == 0 else _rpm(key, int(result[1]))
        if not key.max_parallel:
            return Held(key, None, rid)
        self.hold(slot, rid)
        return Held(key, slot, rid)

    def hold(self, zset: str, rid: str) -> None:
        """Keep renewing the lease of this process's reservation `rid` in `zset` until `unhold`."""
        live = self.live.get(zset)
        if live is None:
            live = self.live[zset] = set()
        live.add(rid)
        if self.beat is None:
            self.beat = asyncio.get_running_loop().create_task(self._heartbeat())

    def unhold(self, zset: str, rid: str) -> None:
        live = self.live.get(zset)
        if live is not None:
            live.discard(rid)
            if not live:
                del self.live[zset]

    async def _acquire(self, slot: str, window: str, args: tuple[Any, ...]) -> Any:
        return await self.script(ACQUIRE, (slot, window), args)

    async def script(self, text: str, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """Run a Lua script: EVALSHA, or EVAL when the server does not know it (first call, restart, SCRIPT FLUSH)."""
        from redis.exceptions import NoScriptError

        if self.redis is None:
            self.redis = _client(self.options)
        sha = self.shas.get(text)
        if sha is not None:
            try:
                return await self.redis.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                pass
        result = await self.redis.eval(text, len(keys), *keys, *args)
        if sha is None:
            import hashlib

            self.shas[text] = hashlib.sha1(text.encode()).hexdigest()
        return result

    def store_failed(self, exc: BaseException) -> None:
        """Count, log (a warning once per outage) and leave the store alone for RETRY_DOWN seconds."""
        self._failed()
        self.down_until = time.monotonic() + RETRY_DOWN
        if not self.down:
            self.down = True
            log.warning("limits store %s unreachable (%s: %s): on_store_error=%s", self.options.store,
                        type(exc).__name__, exc, self.options.on_store_error)
        else:
            log.debug("limits store still unreachable: %r", exc)

    def store_ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("limits store %s reachable again: counting limits there", self.options.store)

    def _fallback(self, key: Key, rid: str, exc: BaseException | None) -> Held:
        if exc is not None:
            self.store_failed(exc)
        mode = self.options.on_store_error
        if mode == "closed":
            raise GatewayError(503, "the rate-limit store is unreachable; try again shortly", "api_error",
                               {"retry-after": "1"})
        if mode == "open":
            return Held(key, None, rid)
        self.local.acquire(key)
        return Held(key, None, rid, local=True)

    async def release(self, held: Held) -> None:
        """Free the request's slot: one ZREM, awaited; if the task is cancelled meanwhile, a task of its own."""
        if held.local:
            self.local.release(held.key)
            return
        slot = held.slot
        if slot is None:
            return
        self.unhold(slot, held.rid)
        try:
            await self._zrem(slot, held.rid)
        except asyncio.CancelledError:
            self.tasks.spawn(self._zrem(slot, held.rid))  # the slot must go all the same
            raise

    def _failed(self) -> None:
        self.errors += 1
        STORE_ERRORS[0] += 1

    async def _zrem(self, slot: str, rid: str) -> None:
        try:
            async with asyncio.timeout(self.bound):
                await self.redis.zrem(slot, rid)
        except Exception as exc:  # the lease frees it
            self._failed()
            log.debug("limits store: releasing %s failed (%r); it expires within the lease", rid, exc)

    async def _heartbeat(self) -> None:
        """While this process has requests in flight, push their deadlines `lease` ahead every lease/3 s."""
        try:
            while self.live:
                await asyncio.sleep(self.options.lease / 3)
                if not self.live:
                    break
                pipe = self.redis.pipeline(transaction=False)
                for slot, ids in self.live.items():
                    pipe.eval(RENEW, 1, slot, self.options.lease, *ids)
                try:
                    async with asyncio.timeout(self.bound):
                        await pipe.execute()
                except Exception as exc:
                    self._failed()
                    log.debug("limits store: renewing the leases failed: %r", exc)
        finally:
            self.beat = None

    async def reachable(self) -> bool:
        """One PING, bounded like every call: the readiness probe's question (app.py)."""
        try:
            if self.redis is None:
                self.redis = _client(self.options)
            async with asyncio.timeout(self.bound):
                await self.redis.ping()
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        if self.beat is not None:
            self.beat.cancel()
        await self.tasks.wait()
        if self.redis is not None:
            await _close(self.options)


# One client (one bounded pool) per event loop and store, shared by the configuration generations: a SIGHUP
# reload reuses the connections, the old generation's requests release through them, and the first
# generation closed at shutdown closes them. (Keyed by loop: tests run several gateways, each in its own.)
_CLIENTS: dict[tuple[Any, str, float], Any] = {}


def _client(options: LimitsOptions) -> Any:
    k = (asyncio.get_running_loop(), options.store, options.timeout)
    client = _CLIENTS.get(k)
    if client is None:
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # no retries (a retried admission could wait twice as long); each connect, read and wait for a free
        # connection bounded by `timeout`
        pool = aredis.BlockingConnectionPool.from_url(
            options.store, max_connections=MAX_CONNECTIONS, timeout=options.timeout, socket_timeout=options.timeout,
            socket_connect_timeout=options.timeout, retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
            health_check_interval=0)
        client = _CLIENTS[k] = aredis.Redis(connection_pool=pool)
    return client


async def _close(options: LimitsOptions) -> None:
    client = _CLIENTS.pop((asyncio.get_running_loop(), options.store, options.timeout), None)
    if client is not None:
        await client.aclose()
        await client.connection_pool.disconnect()
