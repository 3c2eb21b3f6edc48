"""Shared fixtures: a real replay server on 127.0.0.1 and a client pointed at it."""

from __future__ import annotations

import os

import pytest

from llmrelay.testing import ReplayServer, client_for

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture
def server():
    with ReplayServer() as srv:
        yield srv


@pytest.fixture
def client(server):
    c = client_for(server)
    yield c
    c.close()
