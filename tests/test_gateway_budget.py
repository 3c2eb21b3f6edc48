"""Per-key budgets (`budget: {tokens, usd, period}`) over real sockets: counted in the process, or in the real local
Redis shared by two gateway instances (`LLMRELAY_TEST_REDIS_URL`, default redis://127.0.0.1:6379/0, a prefix of each
test's own, deleted afterwards). The Redis cases skip with a reason when Redis is absent, except under `CI=true`.

Every charge here is what the recorded provider stream reported (openai_chat/text_usage_chunk.sse: 14 prompt + 30
completion tokens), or the partial usage the log row of an aborted stream shows; the estimate is the request body's
bytes / 4 plus its max_tokens, as docs/gateway.md says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time

import pytest

from db_helpers import REDIS_URL, redis_prefix
from helpers import wait_for
from gateway_helpers import GatewayThread, gpt_route

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from llmrelay.gateway.config import ConfigError, parse  # noqa: E402
from llmrelay.testing import ReplayServer, Reply, faults  # noqa: E402

URL = REDIS_URL
REC = "openai_chat/text_usage_chunk.sse"
USED = 14 + 30  # the recording's usage
HELD = faults.stall(REC, after=3, seconds=60)  # answers at once, then holds the request in flight
BODY = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                   "max_tokens": 100}).encode()
EST = len(BODY) // 4 + 100
AUTH = {"authorization": "Bearer sk-budget", "content-type": "application/json"}
FREE = {"authorization": "Bearer sk-free", "content-type": "application/json"}




@pytest.fixture(params=["local", "redis"])
def where(request):
    """None (each process counts its own) or (a sync Redis client, a prefix of this test's own)."""
    if request.param == "local":
        yield None
        return
    yield from redis_prefix("the shared-budget tests")


redis_only = pytest.mark.parametrize("where", ["redis"], indirect=True)


def config(up_url: str, where, budget: str, extra: str = "", models: str = "", key: str = "") -> str:
    limits = "" if where is None else f'limits: {{store: {URL}, prefix: "{where[1]}"}}'
    return f"""
models:
{gpt_route(up_url)}{models}
keys:
  - {{name: budgeted, key: sk-budget, budget: {{{budget}}}{key}}}
  - {{name: free, key: sk-free}}
{limits}
{extra}
"""


def instances(cfg: str, where) -> list[GatewayThread]:
    """Two instances sharing the Redis budget; one when each process counts its own."""
    return [GatewayThread(cfg), GatewayThread(cfg)] if where is not None else [GatewayThread(cfg)]


@contextlib.contextmanager
def running(gws):
    with contextlib.ExitStack() as stack:
        for gw in gws:
            stack.enter_context(gw)
        yield


def idle(gws) -> None:
    """Every request ended (and so was settled; a usd budget's settlement, priced on a thread, too)."""
    for gw in gws:
        gw.settle()
        wait_for(lambda: not gw.gateway.budgets.tasks, "the budget settlements")


def post(url: str, headers=AUTH, body: bytes = BODY) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", content=body, headers=headers, timeout=30)


def test_refused_exactly_when_recorded_usage_plus_the_estimate_exceeds_the_budget(where):
    limit = EST + 3 * USED  # room for 4 requests: before the 4th, 3 x 44 used + the estimate fit exactly
    with ReplayServer(default=Reply.recording(REC, chunking="events")) as up:
        gws = instances(config(up.url, where, f"tokens: {limit}, period: day"), where)
        with running(gws):
            for i in range(4):
                resp = post(gws[i % len(gws)].url)
                assert resp.status_code == 200 and "I'm" in resp.text
                # as of admission: what was used before, and this request's estimate
                assert int(resp.headers["x-llmrelay-budget-remaining-tokens"]) == limit - i * USED - EST
                assert resp.headers["x-llmrelay-budget-reset"].endswith("T00:00:00Z")
                idle(gws)
            for gw in gws:  # the estimate no longer fits, on any instance
                resp = post(gw.url)
                assert resp.status_code == 429, resp.text
                err = resp.json()["error"]
                assert err["type"] == "rate_limit_error"
                assert f"token budget of {limit} per day used up" in err["message"]
                assert f"used {4 * USED}" in err["message"] and "resets at" in err["message"]
                assert 1 <= int(resp.headers["retry-after"]) <= 86400
            # a smaller request fits exactly, one token more does not: the estimate decides, not a count of requests
            left = limit - 4 * USED
            for n, status in [(left - 24 + 1, 429), (left - 24, 200)]:
                small = BODY.replace(b'"max_tokens": 100', b'"max_tokens": %d' % n)
                assert len(small) // 4 == 24 and post(gws[-1].url, body=small).status_code == status
            idle(gws)
            assert len(up.requests) == 5  # the refused never went upstream
            assert post(gws[0].url, FREE).status_code == 200  # a key without a budget is not touched
            assert "x-llmrelay-budget-remaining-tokens" not in post(gws[0].url, FREE).headers
        if where is not None:
            r, prefix = where
            names = list(r.scan_iter(match=prefix + "*"))
            assert names and all("budgeted" in n for n in names)  # nothing in Redis for the free key
            (h,) = [n for n in names if not n.endswith(":r")]
            assert int(r.hget(h, "t")) == 5 * USED and int(r.hget(h, "rt")) == 0
            assert 0 < r.pttl(h) <= (86400 + 60) * 1000  # the day's window expires on its own


async def test_concurrent_requests_cannot_overspend_and_aborted_streams_release(where):
    limit = 3 * EST + EST // 2  # 3 estimates fit, not 4
    with ReplayServer(default=HELD) as up:
        gws = instances(config(up.url, where, f"tokens: {limit}, period: total"), where)
        with running(gws):
            async with httpx.AsyncClient(timeout=30) as client:

                async def one(i: int):
                    req = client.build_request("POST", gws[i % len(gws)].url + "/v1/chat/completions", content=BODY,
                                               headers=AUTH)
                    resp = await client.send(req, stream=True)
                    if resp.status_code != 200:
                        await resp.aread()
                        await resp.aclose()
                    return resp

                out = await asyncio.gather(*(one(i) for i in range(8)))
                ok = [r for r in out if r.status_code == 200]
                refused = [r for r in out if r.status_code != 200]
                assert len(ok) == 3 and len(refused) == 5
                for resp in refused:
                    assert resp.status_code == 429
                    assert "period: total" in resp.json()["error"]["message"] or resp.headers["retry-after"] == "1"
                assert len(up.requests) == 3
                for resp in ok:  # the clients hang up mid-stream
                    await resp.aclose()
            idle(gws)
            # each aborted stream was charged its partial usage (a few tokens), not its estimate: room again
            up.enqueue(Reply.recording(REC, chunking="events"))
            resp = post(gws[0].url)
            assert resp.status_code == 200
            charged = limit - EST - int(resp.headers["x-llmrelay-budget-remaining-tokens"])
            assert 0 < charged < 3 * EST // 2


def test_an_aborted_stream_is_charged_the_partial_usage_its_log_row_shows(where, tmp_path):
    db = tmp_path / "log.db"
    limit = 10_000
    with ReplayServer() as up:
        gws = instances(config(up.url, where, f"tokens: {limit}, period: month", f"logging: {db}"), where)
        with running(gws):
            up.enqueue(HELD)
            with httpx.stream("POST", gws[0].url + "/v1/chat/completions", content=BODY, headers=AUTH,
                              timeout=30) as resp:
                assert resp.status_code == 200
                next(resp.iter_bytes())  # the first events arrived: hang up mid-stream
            assert up.wait_disconnect(10) is not None
            up.enqueue(faults.cut(REC, after=5))  # a cut stream: the provider never reports usage
            post(gws[-1].url)
            idle(gws)
            conn = sqlite3.connect(db)
            rows = conn.execute("SELECT status, input_tokens, output_tokens, usage_estimated FROM turns ORDER BY id").fetchall()
            conn.close()
            assert [r[0] for r in rows] == ["aborted", "error"] and all(r[3] for r in rows)
            partial = sum(r[1] + r[2] for r in rows)
            assert partial > 0
            resp = post(gws[0].url, body=BODY)
            assert int(resp.headers["x-llmrelay-budget-remaining-tokens"]) == limit - partial - EST


def test_the_period_rolls_over(where):
    """A 2-second period: once refused, the next window (after Retry-After) has the whole budget again."""
    limit = EST + USED  # one request per window (a second one: 44 + the estimate > the limit)
    with ReplayServer(default=Reply.recording(REC, chunking="events")) as up:
        gws = instances(config(up.url, where, f"tokens: {limit}, period: 2"), where)
        with running(gws):
            refused = None
            for i in range(10):  # a window may roll between two requests: go on until one is refused
                resp = post(gws[i % len(gws)].url)
                idle(gws)
                if resp.status_code == 429:
                    refused = resp
                    break
            assert refused is not None and "resets at" in refused.json()["error"]["message"]
            wait = int(refused.headers["retry-after"])
            assert 1 <= wait <= 2
            time.sleep(wait)  # until the window the refusal named has passed
            resp = post(gws[-1].url)
            assert resp.status_code == 200
            assert int(resp.headers["x-llmrelay-budget-remaining-tokens"]) == limit - EST


def test_usd_budget_settles_the_priced_cost(where, tmp_path):
    db = tmp_path / "log.db"
    with ReplayServer(default=Reply.recording(REC, chunking="events")) as up:
        gws = instances(config(up.url, where, "usd: 1, period: week", f"logging: {db}"), where)
        with running(gws):
            first = post(gws[0].url)
            idle(gws)
            second = post(gws[-1].url)
            idle(gws)
            r1 = float(first.headers["x-llmrelay-budget-remaining-usd"])
            r2 = float(second.headers["x-llmrelay-budget-remaining-usd"])
            conn = sqlite3.connect(db)
            (cost,) = conn.execute("SELECT cost_usd FROM turns ORDER BY id LIMIT 1").fetchone()
            conn.close()
            assert cost and cost > 0
            assert r1 < 1 and abs((r1 - r2) - cost) < 2e-6  # the first request settled at its priced cost


@redis_only
def test_store_errors_follow_on_store_error(where):
    dead = "redis://127.0.0.1:1/0"  # nothing listens there
    with ReplayServer(default=Reply.recording(REC, chunking="events")) as up:
        for mode, statuses in [("closed", [503, 503]), ("open", [200, 200]), ("local", [200, 429])]:
            cfg = config(up.url, None, f"tokens: {EST + 1}, period: day").replace(
                "keys:", f"limits: {{store: {dead}, on_store_error: {mode}, timeout: 0.2}}\nkeys:")
            with GatewayThread(cfg) as gw:
                got = []
                for _ in range(2):
                    got.append(post(gw.url).status_code)
                    gw.settle()
                assert got == statuses, mode
                assert post(gw.url, FREE).status_code == 200  # a key without a budget never asks the store


def test_config_errors_name_the_line():
    base = "models:\n  m: {model: openai:gpt-4o}\nkeys:\n  - name: a\n    key: k\n    budget: %s\n"
    for budget, message in [("{tokens: 10}", "needs period"), ("{period: day}", "needs tokens: N, usd: X or both"),
                            ("{tokens: 10, period: fortnight}", "period must be one of"),
                            ("{tokens: 0, period: day}", "at least 1"), ("{usd: 2000000, period: day}", "at most"),
                            ("{tokens: 10, period: day, limit: 3}", "unknown field 'limit'"),
                            ("{tokens: ten, period: day}", "must be int")]:
        with pytest.raises(ConfigError) as e:
            parse(base % budget, env={})
        assert "line 6" in str(e.value) and message in str(e.value), str(e.value)
    cfg = parse(base % "{tokens: 1_000_000, usd: 25, period: 3600, default_max_tokens: 512}", env={})
    (key,) = cfg.keys.values()
    assert key.budget.tokens == 1_000_000 and key.budget.usd == 25.0 and key.budget.period == 3600
    assert key.budget.default_max_tokens == 512
    assert any("budgets without a limits store" in w for w in cfg.warnings)


def test_every_upstream_request_of_a_fallback_is_charged(where, tmp_path):
    """A stream cut mid-answer continues on the fallback: the budget pays both upstream requests, as the log rows say."""
    db = tmp_path / "log.db"
    limit = 10_000
    with ReplayServer() as up:
        fallback = f"""    fallbacks: [gpt2]
  gpt2:
    model: openai:gpt-4o
    base_url: {up.url}/v1
    api_key: sk-up
    retries: 0"""
        cfg = config(up.url, where, f"tokens: {limit}, period: hour", f"logging: {db}", fallback)
        gws = instances(cfg, where)
        with running(gws):
            up.enqueue(faults.cut(REC, after=5))
            up.enqueue(Reply.recording(REC, chunking="events"))
            resp = post(gws[0].url)
            assert resp.status_code == 200 and "weather" in resp.text
            idle(gws)
            conn = sqlite3.connect(db)
            rows = conn.execute("SELECT status, input_tokens + output_tokens FROM turns ORDER BY id").fetchall()
            conn.close()
            assert len(rows) == 2 and rows[1] == ("ok", USED)  # the cut one, then the fallback
            up.enqueue(Reply.recording(REC, chunking="events"))
            resp = post(gws[-1].url)
            assert int(resp.headers["x-llmrelay-budget-remaining-tokens"]) == limit - rows[0][1] - USED - EST


def test_a_reload_keeps_the_counts(where, tmp_path):
    path = tmp_path / "gateway.yaml"
    limit = 10_000
    with ReplayServer(default=Reply.recording(REC, chunking="events")) as up:
        path.write_text(config(up.url, where, f"tokens: {limit}, period: day"))
        with GatewayThread(path=str(path)) as gw:
            post(gw.url)
            gw.settle()
            path.write_text(config(up.url, where, f"tokens: {limit + 1}, period: day"))
            old = gw.gateway
            assert gw.app.reload() and gw.gateway is not old
            resp = post(gw.url)  # the new limit, the old count
            assert int(resp.headers["x-llmrelay-budget-remaining-tokens"]) == limit + 1 - USED - EST


@redis_only
def test_a_killed_process_reservation_is_charged_its_estimate_when_its_lease_ends(where, tmp_path):
    from test_gateway_limits_redis import Serve

    r, prefix = where
    limit = 10_000
    with ReplayServer(default=HELD) as up:
        path = tmp_path / "gateway.yaml"
        path.write_text(config(up.url, where, f"tokens: {limit}, period: total").replace(
            f'prefix: "{prefix}"', f'prefix: "{prefix}", lease: 1'))
        with Serve(path) as proc:
            with httpx.stream("POST", proc.url + "/v1/chat/completions", content=BODY, headers=AUTH, timeout=30) as resp:
                assert resp.status_code == 200
                assert int(resp.headers["x-llmrelay-budget-remaining-tokens"]) == limit - EST
                # The iterator is kept until the kill: dropped, it would close the connection at once, and
                # the gateway would settle the hang-up (partial usage) before the kill, sometimes.
                chunks = resp.iter_bytes()
                next(chunks)
                proc.proc.kill()  # SIGKILL: no settlement, no more lease renewals
                proc.proc.wait(10)
        start = float(r.time()[0])
        wait_for(lambda: float(r.time()[0]) > start + 2, "the lease to pass (Redis clock)")
        up.enqueue(Reply.recording(REC, chunking="events"))
        with GatewayThread(path.read_text()) as gw:
            resp = post(gw.url)
            # the dead request's reservation became its estimate, used; this one's estimate is reserved
            assert int(resp.headers["x-llmrelay-budget-remaining-tokens"]) == limit - EST - EST
            gw.settle()
        (h,) = [n for n in r.scan_iter(match=prefix + "*budget*") if not n.endswith(":r")]
        assert int(r.hget(h, "t")) == EST + USED and int(r.hget(h, "rt")) == 0
        assert r.pttl(h) == -1  # a total budget never expires


def test_a_request_refused_by_the_limits_gives_its_reservation_back(where):
    limit = 10_000
    with ReplayServer(default=HELD) as up:
        gws = instances(config(up.url, where, f"tokens: {limit}, period: day", key=", max_parallel: 1"), where)
        with running(gws):
            with httpx.stream("POST", gws[0].url + "/v1/chat/completions", content=BODY, headers=AUTH,
                              timeout=30) as held:
                assert held.status_code == 200
                assert int(held.headers["x-llmrelay-budget-remaining-tokens"]) == limit - EST
                if where is None:  # one process: its own max_parallel
                    refused = post(gws[0].url)
                else:
                    refused = post(gws[-1].url)
                assert refused.status_code == 429 and "in flight" in refused.json()["error"]["message"]
                next(held.iter_bytes())
            idle(gws)
            up.enqueue(Reply.recording(REC, chunking="events"))
            resp = post(gws[-1].url)
            charged = limit - EST - int(resp.headers["x-llmrelay-budget-remaining-tokens"])
            assert 0 < charged < EST  # the aborted stream's partial usage; nothing for the refused one


def test_estimates_the_whole_budget_cannot_hold_and_the_anthropic_shape(where):
    with ReplayServer(default=Reply.recording(REC, chunking="events")) as up:
        cfg = config(up.url, where, "tokens: 1000, period: day, default_max_tokens: 500", models=f"""  claude:
    model: anthropic:claude-sonnet-4-5
    base_url: {up.url}
    api_key: sk-ant-up
    retries: 0""")
        gws = instances(cfg, where)
        with running(gws):
            big = BODY.replace(b'"max_tokens": 100', b'"max_tokens": 2000')
            resp = post(gws[0].url, body=big)  # more than the whole budget: retrying would never help
            assert resp.status_code == 400 and "lower max_tokens" in resp.json()["error"]["message"]
            plain = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()
            resp = post(gws[0].url, body=plain)  # no max_tokens: default_max_tokens is the output estimate
            assert resp.status_code == 200
            assert int(resp.headers["x-llmrelay-budget-remaining-tokens"]) == 1000 - len(plain) // 4 - 500
            idle(gws)
            msg = json.dumps({"model": "claude", "max_tokens": 950, "messages": [{"role": "user", "content": "hi"}]})
            resp = httpx.post(gws[-1].url + "/v1/messages", content=msg, timeout=30,
                              headers={"x-api-key": "sk-budget", "content-type": "application/json"})
            body = resp.json()
            assert resp.status_code == 429 and body["type"] == "error"
            assert body["error"]["type"] == "rate_limit_error" and "token budget of 1000 per day" in body["error"]["message"]


def test_usd_budget_refuses_once_priced_usage_plus_the_estimate_exceeds_it(where, tmp_path):
    db = tmp_path / "log.db"
    limit = 0.002
    with ReplayServer(default=Reply.recording(REC, chunking="events")) as up:
        gws = instances(config(up.url, where, f"usd: {limit}, period: week", f"logging: {db}"), where)
        with running(gws):
            statuses, first = [], None
            for i in range(12):
                resp = post(gws[i % len(gws)].url)
                statuses.append(resp.status_code)
                first = first or resp
                idle(gws)
                if resp.status_code == 429:
                    break
            n = statuses.index(429)
            assert n >= 1 and statuses[:n] == [200] * n
            err = resp.json()["error"]["message"]
            assert f"USD budget of ${limit:g} per week used up" in err and "resets at" in err
            conn = sqlite3.connect(db)
            (cost,) = set(c for (c,) in conn.execute("SELECT cost_usd FROM turns"))  # each request cost the same
            conn.close()
            est = limit - float(first.headers["x-llmrelay-budget-remaining-usd"])
            assert n * cost + est > limit - 1e-6 and (n - 1) * cost + est <= limit + 1e-6
