"""Typed like the README promises: a user app made of every README snippet (tests/typing/readme_app.py)
passes `mypy --strict` and pyright in strict mode, and the package passes mypy with the configuration
in pyproject.toml (`[tool.mypy]`). The app's `assert_type` lines pin what the API returns:
`output=Weather` gives a `Weather`, a completed response has its messages, an error's partial
response is there, `@llmrelay.tool` keeps the function's signature.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "typing" / "readme_app.py"
BIN = Path(sys.executable).parent


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _code_lines(text: str) -> set[str]:
    out = set()
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.add(re.sub(r"\s+", " ", line))
    return out


def test_the_app_holds_every_readme_snippet():
    """Each code line of each README snippet is in the app (imports and `main` aside)."""
    app = _code_lines(APP.read_text())
    missing = []
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        for line in _code_lines(block):
            if line.startswith(("import ", "from ")) or line in ("async def main() -> None:", "asyncio.run(main())"):
                continue
            if line not in app:
                missing.append(line)
    assert not missing, "README lines not in tests/typing/readme_app.py: " + "\n".join(missing)


def test_readme_app_passes_mypy_strict():
    result = _run(str(BIN / "mypy"), "--strict", "--config-file", "", str(APP))
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_app_passes_pyright_strict():
    pyright = BIN / "pyright"
    if shutil.which(str(pyright)) is None:  # pragma: no cover - dev installs it
        pytest.fail("pyright is not installed: `make install`")
    result = _run(str(pyright), "--pythonpath", sys.executable, str(APP))
    assert "0 errors, 0 warnings" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0


def test_pyright_really_is_strict_on_the_app():
    """The strict setting reaches the app: an unannotated function there is an error."""
    probe = APP.parent / "_probe_strict.py"
    probe.write_text("def f(x):\n    return x\n")
    try:
        result = _run(str(BIN / "pyright"), "--pythonpath", sys.executable, str(probe))
    finally:
        probe.unlink()
    assert result.returncode != 0 and "reportMissingParameterType" in result.stdout, result.stdout


def test_package_passes_mypy_with_its_configuration():
    """`[tool.mypy]` in pyproject.toml: --strict, relaxed for the internals as it says there."""
    result = _run(str(BIN / "mypy"))
    assert result.returncode == 0 and "Success" in result.stdout, result.stdout + result.stderr
