"""Per-key budgets (`budget: {tokens, usd, period}`): reserved at admission, settled when the request ends.

- **Reserve.** Before anything goes upstream, the request's estimate is
  reserved: output = its `max_tokens` / `max_completion_tokens` /
  `max_output_tokens` (times `n`), else the budget's `default_max_tokens`;
  input = its body's bytes / 4, each base64 blob (an image, a PDF) counted as
  at most `BLOB_TOKENS`; USD = those tokens at the highest price among the
  model's targets and fallbacks. The request is refused (429, Retry-After)
  when used + reserved + estimate would pass the limit, so N concurrent
  requests can overspend at most by how far their real usage exceeds their
  estimates (nothing when they set max_tokens and the input estimate holds).
- **Settle.** When it ends however it ends (answered, failed, the client hung
  up, cancelled: a `finally`), the reservation is replaced by the real usage
  of every upstream request it made (retries, fallbacks, the partial usage of
  a cut stream: the same responses the log rows are written from, collected by
  `BudgetHook`). USD is priced on a worker thread (genai-prices can take ~1 ms,
  too long for the event loop), so a key with a `usd` budget settles a moment
  after its request ends, keeping its reservation until then.
- **Where.** Without a `limits:` store each process counts its own (kept
  across SIGHUP reloads, lost at exit). With one, every process counts in the
  same Redis: one Lua script per admission and one per settlement, atomic; a
  hash per key and period window (`…:budget:<period>:<window start>`) that
  expires after its window, and a sorted set of reservations whose leases the
  limits heartbeat renews: a reservation of a process that died is charged its
  estimate when its lease runs out. Redis errors follow `on_store_error`.

Keys without a budget never reach this module.
"""

from __future__ import annotations

import asyncio
import calendar
import contextvars
import datetime as _dt
import itertools
import logging
import math
import os
import time
from typing import Any

from ..observability.hooks import Hooks
from .background import Background
from .config import Budget, Key
from .encode import GatewayError

__all__ = ["Budgets", "BudgetHook", "Charge", "window", "estimate_tokens"]

log = logging.getLogger("llmrelay.gateway")
NANO = 1_000_000_000  # USD are counted in integer nano-dollars (exact sums)
BLOB_TOKENS = 3000  # the most one base64 blob (image, document) is estimated at
TAIL = 60.0  # seconds a window's Redis keys outlive it (requests admitted at its end settle there)
CHARGE: contextvars.ContextVar[Charge | None] = contextvars.ContextVar("llmrelay_gateway_charge", default=None)

# KEYS: the window's hash (t, u: used tokens, nano-USD; rt, ru: reserved; r:<id>: "<tokens> <nano-USD>" of each
# reservation; d:<id>: the same for one whose lease ran out, charged its estimate), its reservations' zset
# (id -> lease deadline). ARGV: id, tokens, nano-USD, token limit (0: none),
# nano-USD limit (0: none), lease, ttl ms (0: never expires).
# Returns {1, tokens used+reserved, nano-USD used+reserved} (admitted, the estimate included) or
# {0, 1 (tokens) | 2 (USD), used, reserved}.
RESERVE = """
local function s(n) return string.format('%d', n) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(dead) do  -- their process stopped renewing them: charged their estimate
  local e = redis.call('HGET', KEYS[1], 'r:' .. id)
  if e then
    local sp = string.find(e, ' ')
    local et, eu = tonumber(string.sub(e, 1, sp - 1)), tonumber(string.sub(e, sp + 1))
    redis.call('HINCRBY', KEYS[1], 'rt', s(-et))
    redis.call('HINCRBY', KEYS[1], 'ru', s(-eu))
    redis.call('HINCRBY', KEYS[1], 't', s(et))
    redis.call('HINCRBY', KEYS[1], 'u', s(eu))
    redis.call('HDEL', KEYS[1], 'r:' .. id)
    redis.call('HSET', KEYS[1], 'd:' .. id, e)  -- if its process lives after all, its settlement corrects it
  end
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local v = redis.call('HMGET', KEYS[1], 't', 'u', 'rt', 'ru')
local ut, uu, rt, ru = tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0), tonumber(v[4] or 0)
local et, eu, lt, lu = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if lt > 0 and ut + rt + et > lt then return {0, 1, s(ut), s(rt)} end
if lu > 0 and uu + ru + eu > lu then return {0, 2, s(uu), s(ru)} end
redis.call('HINCRBY', KEYS[1], 'rt', s(et))
redis.call('HINCRBY', KEYS[1], 'ru', s(eu))
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], s(et) .. ' ' .. s(eu))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[1])
local ttl = tonumber(ARGV[7])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {1, s(ut + rt + et), s(uu + ru + eu)}
"""

# KEYS: as RESERVE. ARGV: id, estimated tokens, nano-USD, actual tokens, nano-USD. The reservation becomes the real
# usage; if its lease ran out meanwhile (charged the estimate), the difference is charged. Idempotent: a reservation
# already settled (a settlement sent again after a cancellation) and a window gone are left alone. A cancelled
# admission settles 0, 0: its reservation, if the script had made it, is dropped.
SETTLE = """
local function s(n) return string.format('%d', n) end
local at, au = tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HEXISTS', KEYS[1], 'r:' .. ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'rt', s(-tonumber(ARGV[2])))
  redis.call('HINCRBY', KEYS[1], 'ru', s(-tonumber(ARGV[3])))
elseif redis.call('HDEL', KEYS[1], 'd:' .. ARGV[1]) == 1 then
  at, au = at - tonumber(ARGV[2]), au - tonumber(ARGV[3])
else
  return 0
end
redis.call('HINCRBY', KEYS[1], 't', s(at))
redis.call('HINCRBY', KEYS[1], 'u', s(au))
return 1
"""


def window(period: str | int, now: float) -> tuple[int, int | None]:
    """The period window holding `now` (epoch seconds, UTC): (start, end); end None for `total`."""
    if period == "total":
        return 0, None
    if isinstance(period, int):
        start = int(now // period * period)
        return start, start + period
    if period == "month":
        d = _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
        start = calendar.timegm((d.year, d.month, 1, 0, 0, 0))
        y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return start, calendar.timegm((y, m, 1, 0, 0, 0))
    length, offset = {"hour": (3600, 0), "day": (86400, 0), "week": (7 * 86400, 4 * 86400)}[period]  # 1970-01-05: Monday
    start = int((now - offset) // length * length + offset)
    return start, start + length


def estimate_tokens(body: dict[str, Any], body_bytes: bytes, default_output: int) -> tuple[int, int]:
    """(input: bytes / 4, base64 blobs at most BLOB_TOKENS each; output: max_tokens or the default, times n)."""
    out = None
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        v = body.get(name)
        if type(v) is int and v > 0:
            out = v
            break
    n = body.get("n")
    output = (out or default_output) * (n if type(n) is int and 1 < n <= 128 else 1)
    size = len(body_bytes)
    blobs = 0
    for marker in (b";base64,", b'"data":"', b'"data": "'):  # data: URIs (OpenAI), Anthropic / Gemini sources
        i = body_bytes.find(marker)
        while i >= 0:
            start = i + len(marker)
            end = body_bytes.find(b'"', start)
            if end < 0:
                break
            if end - start > 4 * BLOB_TOKENS:
                size -= end - start
                blobs += BLOB_TOKENS
            i = body_bytes.find(marker, end)
    return max(0, size) // 4 + blobs, output


class Charge:
    """One admitted request's reservation, and the responses of its upstream requests (to settle)."""

    __slots__ = ("key", "budget", "start", "end", "rid", "tokens", "nusd", "where", "names", "responses", "token")

    def __init__(self, key: Key, budget: Budget, start: int, end: int | None, rid: str, tokens: int, nusd: int):
        self.key = key
        self.budget = budget
        self.start = start
        self.end = end
        self.rid = rid
        self.tokens = tokens  # reserved
        self.nusd = nusd
        self.where = "local"  # local | redis | none (on_store_error: open)
        self.names: tuple[str, str] = ("", "")
        self.responses: list[Any] = []
        self.token: Any = None


class BudgetHook(Hooks):
    """Collects the response of every upstream request (every outcome) of a request with a budget."""

    def on_turn_end(self, ctx: Any, call: Any, response: Any) -> None:
        charge = CHARGE.get()
        if charge is not None:
            charge.responses.append(response)


class _Window:
    __slots__ = ("start", "t", "u", "rt", "ru")

    def __init__(self, start: int):
        self.start = start
        self.t = self.u = self.rt = self.ru = 0


# In-process counts, per event loop (one server; a SIGHUP reload keeps them), by key and period
_LOCAL: dict[Any, dict[tuple[str, str], _Window]] = {}


def _iso(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Budgets:
    """The budgets of one configuration generation: reserve at admission, settle at the end."""

    def __init__(self, gateway: Any):
        self.gw = gateway
        self.shared = gateway.shared  # RedisLimits or None
        self.rates: dict[str, tuple[float, float]] = {}  # route -> the highest (input, output) nano-USD per token
        self.token = os.urandom(6).hex()
        self.ids = itertools.count(1)
        self.tasks = Background()
        self.windows: dict[Any, tuple[int, int | None, bytes]] = {}  # period -> the current (start, end, end in ISO)
        self.local: dict[tuple[str, str], _Window] | None = None

    def _local(self) -> dict[tuple[str, str], _Window]:
        d = self.local
        if d is None:
            d = self.local = _LOCAL.setdefault(asyncio.get_running_loop(), {})
        return d

    async def reserve(self, key: Key, route: Any, body: dict[str, Any], body_bytes: bytes, x: Any) -> Charge:
        """Reserve the request's estimate (raises GatewayError 429, 400 or 503) and start collecting its usage."""
        b = key.budget
        assert b is not None
        inp, out = estimate_tokens(body, body_bytes, b.default_max_tokens)
        tokens = inp + out
        nusd = 0
        if b.usd is not None:
            rates = self.rates.get(route.name)
            if rates is None:  # priced once per model and configuration, off the event loop
                rates = self.rates[route.name] = await asyncio.to_thread(self._rates, route)
            nusd = math.ceil(inp * rates[0] + out * rates[1])
        if b.tokens is not None and tokens > b.tokens or b.usd is not None and nusd > b.usd * NANO:
            what, shown = ("token", f"{tokens} tokens") if b.tokens is not None and tokens > b.tokens else \
                ("USD", f"${nusd / NANO:.6f}")
            raise GatewayError(400, f"key {key.name!r}: this request's estimate ({shown}: its max_tokens, else "
                                    f"{b.default_max_tokens}, plus its input) exceeds the whole {what} budget "
                                    f"({_limit(b, what)} per {_per(b)}); lower max_tokens")
        now = time.time()
        win = self.windows.get(b.period)
        if win is None or now < win[0] or win[1] is not None and now >= win[1]:
            start, end = window(b.period, now)
            win = self.windows[b.period] = (start, end, b"" if end is None else _iso(end).encode())
        start, end = win[0], win[1]
        charge = Charge(key, b, start, end, "", tokens, nusd)
        lt, lu = b.tokens or 0, round(b.usd * NANO) if b.usd is not None else 0
        shared = self.shared
        result = None
        if shared is not None and time.monotonic() >= shared.down_until:
            tag = f"{shared.options.prefix}{{{key.name}:{key.key_hash[7:19]}}}:budget:{b.period}:{start}"
            charge.names = (tag, tag + ":r")
            charge.rid = f"{self.token}:{next(self.ids)}"
            ttl = 0 if end is None else math.ceil((end - now + TAIL) * 1000)
            args = (charge.rid, tokens, nusd, lt, lu, shared.options.lease, ttl)
            try:
                async with asyncio.timeout(shared.bound):
                    result = await shared.script(RESERVE, charge.names, args)
            except asyncio.CancelledError:
                shared.tasks.spawn(self._settle_redis(charge, 0, 0))  # the script may have run
                raise
            except Exception as exc:  # the store failed, not the request
                if isinstance(exc, TimeoutError):  # the script may have run, its answer late
                    shared.tasks.spawn(self._settle_redis(charge, 0, 0))
                shared.store_failed(exc)
            else:
                shared.store_ok()
        if result is not None:
            if int(result[0]) != 1:
                raise self._refused(charge, int(result[1]), int(result[2]), int(result[3]), now)
            charge.where = "redis"
            shared.hold(charge.names[1], charge.rid)
            total_t, total_u = int(result[1]), int(result[2])
        elif shared is not None and shared.options.on_store_error != "local":
            if shared.options.on_store_error == "closed":
                raise GatewayError(503, "the budget store is unreachable; try again shortly", "api_error",
                                   {"retry-after": "1"})
            charge.where = "none"
            total_t = total_u = 0
        else:
            local = self._local()
            w = local.get((key.key_hash, str(b.period)))
            if w is None or w.start != start:
                w = local[(key.key_hash, str(b.period))] = _Window(start)
            if lt and w.t + w.rt + tokens > lt:
                raise self._refused(charge, 1, w.t, w.rt, now)
            if lu and w.u + w.ru + nusd > lu:
                raise self._refused(charge, 2, w.u, w.ru, now)
            w.rt += tokens
            w.ru += nusd
            total_t, total_u = w.t + w.rt, w.u + w.ru
        headers = x.extra_headers
        if b.tokens is not None:
            headers.append((b"x-llmrelay-budget-remaining-tokens", b"%d" % max(0, b.tokens - total_t)))
        if b.usd is not None:
            headers.append((b"x-llmrelay-budget-remaining-usd", b"%.6f" % max(0.0, b.usd - total_u / NANO)))
        if end is not None:
            headers.append((b"x-llmrelay-budget-reset", win[2]))
        charge.token = CHARGE.set(charge)
        return charge

    def _refused(self, charge: Charge, which: int, used: int, reserved: int, now: float) -> GatewayError:
        b = charge.budget
        what = "token" if which == 1 else "USD"
        limit, need = (b.tokens or 0, charge.tokens) if which == 1 else (round((b.usd or 0) * NANO), charge.nusd)

        def fmt(n: int) -> str:
            return f"{n}" if which == 1 else f"${n / NANO:.6f}"

        if used + need <= limit:  # room once the requests in flight settle
            when, retry = "requests in flight hold the rest; try again shortly", "1"
        elif charge.end is None:
            when, retry = "it does not reset (period: total)", None
        else:
            when, retry = f"it resets at {_iso(charge.end)}", str(max(1, math.ceil(charge.end - now)))
        headers = {"retry-after": retry} if retry is not None else {}
        return GatewayError(429, f"key {charge.key.name!r}: {what} budget of {_limit(b, what)} per {_per(b)} used up "
                                 f"(used {fmt(used)}, reserved by requests in flight {fmt(reserved)}, this request "
                                 f"needs ~{fmt(need)}); {when}", "rate_limit_error", headers)

    def _rates(self, route: Any) -> tuple[float, float]:
        """The highest input and output price per token (nano-USD) among the route's targets and fallbacks."""
        from ..cost import cost_of
        from ..providers import PROVIDERS, parse_model
        from ..usage import Usage

        routes = self.gw.config.routes
        hi_in = hi_out = 0.0
        unknown = []
        for name in (route.name, *route.fallbacks):
            for t in routes[name].targets:
                provider, model = parse_model(t.model, PROVIDERS)
                cin = cost_of(provider, model, Usage(input_tokens=1_000_000, output_tokens=0)).total
                cout = cost_of(provider, model, Usage(input_tokens=0, output_tokens=1_000_000)).total
                if cin is None or cout is None:
                    unknown.append(t.model)
                    continue
                hi_in, hi_out = max(hi_in, cin * NANO / 1e6), max(hi_out, cout * NANO / 1e6)
        if unknown:
            log.warning("budget: no known price for %s (model %r): its requests count $0 towards usd budgets",
                        ", ".join(unknown), route.name)
        return hi_in, hi_out

    async def settle(self, charge: Charge) -> None:
        """The request ended: replace its reservation by what its upstream requests used (in a finally)."""
        if charge.token is not None:
            try:
                CHARGE.reset(charge.token)
            except ValueError:  # (another context: nothing of ours to undo there)
                pass
            charge.token = None
        if charge.where == "none":
            return
        tokens = 0
        for r in charge.responses:
            tokens += r.usage.total_tokens or 0
        if charge.budget.usd is not None and charge.responses:  # priced on a thread, then settled
            self.tasks.spawn(self._settle_priced(charge, tokens))
            return
        try:
            await self._apply(charge, tokens, 0)
        except asyncio.CancelledError:
            self.tasks.spawn(self._apply(charge, tokens, 0))
            raise

    async def _settle_priced(self, charge: Charge, tokens: int) -> None:
        def price() -> int:
            total = 0.0
            for r in charge.responses:
                try:
                    total += r.cost.total or 0.0
                except Exception:  # pricing never fails a settlement: the tokens still count
                    log.debug("budget: pricing a response failed", exc_info=True)
            return math.ceil(total * NANO)

        try:
            nusd = await asyncio.to_thread(price)
        except Exception:  # (no thread to be had: shutting down) charged its estimate
            nusd = charge.nusd
        await self._apply(charge, tokens, nusd)

    async def _apply(self, charge: Charge, tokens: int, nusd: int) -> None:
        if charge.where == "redis":
            self.shared.unhold(charge.names[1], charge.rid)
            await self._settle_redis(charge, tokens, nusd)
            return
        w = self._local().get((charge.key.key_hash, str(charge.budget.period)))
        if w is not None and w.start == charge.start:  # a window gone is left gone
            w.rt -= charge.tokens
            w.ru -= charge.nusd
            w.t += tokens
            w.u += nusd

    async def _settle_redis(self, charge: Charge, tokens: int, nusd: int) -> None:
        shared = self.shared
        args = (charge.rid, charge.tokens, charge.nusd, tokens, nusd)
        try:
            async with asyncio.timeout(shared.bound):
                await shared.script(SETTLE, charge.names, args)
        except Exception as exc:  # the lease runs out and charges the estimate
            shared._failed()
            log.debug("budget store: settling %s failed (%r); charged its estimate when its lease ends", charge.rid, exc)

    async def aclose(self) -> None:
        await self.tasks.wait(timeout=5)
        _LOCAL.pop(asyncio.get_running_loop(), None)


def _limit(b: Budget, what: str) -> str:
    return f"{b.tokens}" if what == "token" else f"${b.usd:g}"


def _per(b: Budget) -> str:
    return f"{b.period} s" if isinstance(b.period, int) else "all time" if b.period == "total" else b.period
