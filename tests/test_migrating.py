"""Every llmrelay snippet in docs/migrating.md runs, as written, against the replay server.

The guide's code blocks are tagged in their info string: ```` ```python llmrelay ```` is ours
and runs here; ```` ```python memlayer ```` (mojentic, llmgate, majordomo, litellm) is the other
library's code, shown for comparison, never run. An untagged Python block fails the test, so
no llmrelay snippet can go untested. `expect="..."` in the info string is text the snippet
must print.

Each snippet runs in its own Python process, in a temporary directory, with every provider's
base URL variables pointing at a `ReplayServer(default=by_request())` (which picks a bundled
recording from the request's path and model) and a dummy key in every key variable: the
environment the snippets would read from a real shell, so the code is not edited to run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmrelay.cli.render import base_url_env_vars, key_env_vars
from llmrelay.providers import PROVIDERS
from llmrelay.testing import BASE_PATHS, ReplayServer, by_request

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"
OTHERS = ("memlayer", "mojentic", "llmgate", "majordomo", "litellm")
FENCE = re.compile(r"^```(\w*)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def blocks() -> list[tuple[str, str, str, int]]:
    """(language, tags, code, line) of every fenced block of the guide."""
    text = GUIDE.read_text()
    return [(m.group(1), m.group(2).strip(), m.group(3), text.count("\n", 0, m.start()) + 1)
            for m in FENCE.finditer(text)]


def snippets() -> list[tuple[str, str | None, int]]:
    out = []
    for lang, tags, code, line in blocks():
        if lang == "python" and tags.split()[:1] == ["llmrelay"]:
            m = re.search(r'expect="([^"]*)"', tags)
            out.append((code, m.group(1) if m else None, line))
    return out


def test_every_python_block_is_tagged_and_every_library_has_snippets():
    seen = set()
    for lang, tags, _code, line in blocks():
        if lang in ("python", "py"):
            tag = tags.split()[0] if tags else ""
            assert lang == "python" and tag in ("llmrelay", *OTHERS), \
                f"docs/migrating.md:{line}: tag each Python block `llmrelay` (run here) or one of {OTHERS}"
            seen.add(tag)
    assert seen == {"llmrelay", *OTHERS}
    assert len(snippets()) >= 20


@pytest.fixture(scope="module")
def replay():
    with ReplayServer(default=by_request()) as server:
        yield server


def env_for(server: ReplayServer) -> dict[str, str]:
    drop = ("_API_KEY", "_BASE_URL", "_API_BASE", "_TOKEN", "_HOST", "_API_URL")
    env = {k: v for k, v in os.environ.items() if not k.endswith(drop) and not k.startswith("LLMRELAY_")}
    for p in PROVIDERS.values():
        for name in base_url_env_vars(p):
            env[name] = server.url + BASE_PATHS.get(p.protocol, "")
        for name in key_env_vars(p):
            env[name] = "test-key"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("code, expect, line", snippets(), ids=lambda v: f"line{v}" if isinstance(v, int) else None)
def test_snippet_runs(code, expect, line, replay, tmp_path):
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env_for(replay), capture_output=True,
                       text=True, timeout=60)
    where = f"docs/migrating.md:{line}"
    assert r.returncode == 0, f"{where} failed:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, f"{where}:\n{r.stderr}"
    assert r.stdout.strip(), f"{where} printed nothing"
    if expect is not None:
        assert expect in r.stdout, f"{where}: {expect!r} not in:\n{r.stdout}"
