"""Shared fixtures: a real replay server on 127.0.0.1 and a client pointed at it."""

from __future__ import annotations

import os

import pytest

from llmrelay.testing import ReplayServer, client_for

IN_CI = os.environ.get("CI") == "true"

# A developer's own LLMRELAY_LOG must not send the test suite's calls to their log database.
os.environ.pop("LLMRELAY_LOG", None)


@pytest.fixture
def server():
    with ReplayServer() as srv:
        yield srv


@pytest.fixture
def client(server):
    # retry=0: these tests look at each error as the transport raised it; the
    # retry policy (on by default for users) has tests of its own.
    c = client_for(server, retry=0)
    yield c
    c.close()


@pytest.fixture(params=["sync", "async"])
def mode(request):
    """A test that takes `mode` runs twice: through the sync API and through the async one."""
    return request.param


@pytest.fixture(params=["stream", "complete"])
def how(request):
    """A test that takes `how` runs twice: streamed and with complete()."""
    return request.param
