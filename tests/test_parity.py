"""Sync/async parity: `client.stream` and `client.astream` yield the same events and
assemble the same response for every bundled wire recording, errors included."""

from __future__ import annotations

import pytest

from helpers import drain

from llmrelay import APIError
from llmrelay.testing import Reply, provider_for, wire_recordings

RECORDINGS = wire_recordings()


def _open(client, mode: str, name: str):
    model = f"{provider_for(name)}:test-model"
    try:
        return client.stream(model, "hi") if mode == "sync" else client.astream(model, "hi")
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("llmrelay.protocols."):
            pytest.skip(f"protocol module not written yet: {exc.name}")
        raise


async def _run(server, client, mode: str, name: str, chunking):
    """(events, error, response) for one replay of a recording."""
    server.enqueue(Reply.recording(name, chunking=chunking))
    s = _open(client, mode, name)
    events, error = await drain(s, mode)
    assert error is None or isinstance(error, APIError), repr(error)  # only typed errors, never another
    return events, error, s.response


def _summary(r) -> dict:
    return {
        "status": r.status,
        "id": r.id,
        "model": r.model,
        "text": r.text,
        "reasoning": r.reasoning,
        "refusal": r.refusal,
        "tool_calls": r.tool_calls,
        "choices": r.choices,  # every choice: parts (with signatures), refusal, finish reasons
        "finish": (r.finish_reason, r.raw_finish_reason),
        "usage": r.usage,
        "provider_events": r.provider_events,
    }


def _error_summary(e: APIError | None):
    if e is None:
        return None
    return (
        type(e),
        str(e),
        getattr(e, "code", None),
        getattr(e, "status_code", None),
        e.body,
        e.provider,
        e.model,
        _summary(e.partial) if e.partial is not None else None,
    )


@pytest.mark.parametrize("chunking", ["random", "events"])
@pytest.mark.parametrize("name", RECORDINGS)
async def test_sync_async_parity(server, client, name, chunking):
    sync_events, sync_error, sync_response = await _run(server, client, "sync", name, chunking)
    async_events, async_error, async_response = await _run(server, client, "async", name, chunking)

    assert len(server.requests) == 2
    assert server.requests[0].path == server.requests[1].path
    assert server.requests[0].json == server.requests[1].json  # the same request on both paths

    assert sync_events == async_events
    assert _error_summary(sync_error) == _error_summary(async_error)
    assert _summary(sync_response) == _summary(async_response)
    if sync_error is None:
        assert sync_response.status in ("ok", "truncated")
    else:
        assert sync_response.status == "error"


@pytest.mark.parametrize("name", RECORDINGS)
async def test_events_do_not_depend_on_network_chunking(server, client, name):
    """The same bytes split differently (one piece per event vs. a single write) decode to
    the same events, so parity above is not an accident of identical chunking."""
    by_event, err1, r1 = await _run(server, client, "sync", name, "events")
    whole, err2, r2 = await _run(server, client, "async", name, "whole")
    assert by_event == whole
    assert _error_summary(err1) == _error_summary(err2)
    assert _summary(r1) == _summary(r2)
