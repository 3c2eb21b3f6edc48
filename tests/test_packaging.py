"""The wheel: it builds, its metadata says what pyproject.toml promises, and it installs and works
in a clean venv with the *lowest* versions the dependency ranges allow (the lower bounds are
tested here; the dev venv tests the pins of constraints.txt).

The venv gets its packages from PyPI (or this machine's wheel cache); nothing else is fetched.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import llmrelay

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The lowest versions of the core and of the `otel` extra: each is the lower bound of its range.
LOWEST = {"httpx": "0.27.0", "pydantic": "2.7.0", "opentelemetry-api": "1.30.0"}

SMOKE = r'''
import importlib.metadata as md, sys
from pathlib import Path
import llmrelay, httpx, pydantic
from llmrelay.testing import ReplayServer, Reply, client_for
from llmrelay.observability import OpenTelemetryHooks

assert llmrelay.__version__ == md.version("llmrelay"), (llmrelay.__version__, md.version("llmrelay"))
assert "site-packages" in llmrelay.__file__, llmrelay.__file__          # the installed wheel, not the checkout
assert (Path(llmrelay.__file__).parent / "py.typed").is_file()
print("versions", httpx.__version__, pydantic.VERSION, md.version("opentelemetry-api"))
with ReplayServer() as server:
    server.enqueue(Reply.recording("anthropic/text_basic.sse"), Reply.recording("openai_chat/text_usage_chunk.sse"))
    with client_for(server, hooks=[OpenTelemetryHooks()]) as client:    # the API alone: no-op spans
        assert client.complete("anthropic:claude-sonnet-4-5", "hi").text == "- Captain\n- Scoop"
        with client.stream("openai:gpt-4o", "hi") as stream:
            assert "".join(stream.text_stream) == stream.response.text != ""
print("ok")
'''


def _requires(metadata: str) -> list[str]:
    return re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)


def test_pyproject_ranges_and_pins():
    project = PYPROJECT["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    assert not [d for d in deps if "==" in d], "exact pins belong in constraints.txt"
    for dep in deps:  # a tested lower bound and an upper bound
        assert ">=" in dep and "<" in dep, dep
    assert project["optional-dependencies"]["otel"] == ["opentelemetry-api>=1.30,<2"]  # the library needs only the API
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    for name in ("opentelemetry-sdk", "genai-prices", "psycopg", "mypy", "pyright"):
        assert name in pins, name
    assert project["version"] == llmrelay.__version__
    assert project["license"] == "Apache-2.0 AND MIT" and (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert f"## {llmrelay.__version__}" in (ROOT / "CHANGELOG.md").read_text()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (path,) = out.glob("llmrelay-*.whl")
    return path


def test_wheel_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"llmrelay-{llmrelay.__version__}.dist-info/METADATA").decode()
    assert "llmrelay/py.typed" in names
    assert "llmrelay/testing/recordings/anthropic/text_basic.sse" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    assert "License-Expression: Apache-2.0 AND MIT" in metadata
    assert "Classifier: Typing :: Typed" in metadata and "Project-URL: Changelog" in metadata
    requires = _requires(metadata)
    assert 'opentelemetry-api<2,>=1.30; extra == "otel"' in requires
    assert not [r for r in requires if "==" in r.split(";")[0]]


def test_wheel_installs_and_runs_in_a_clean_venv_at_the_lowest_versions(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in LOWEST.items()]
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              f"{wheel}[otel]", *pins], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([str(python), "-c", SMOKE], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "versions 0.27.0 2.7.0 1.30.0" in run.stdout and run.stdout.rstrip().endswith("ok")
    cli = subprocess.run([str(env_dir / "bin" / "llmrelay"), "--help"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "chat" in cli.stdout
