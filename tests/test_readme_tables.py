"""The README's provider tables are built from the code: the environment variables from
`llmrelay.PROVIDERS`, the model-string prefixes from `llmrelay.providers.PREFIX_ALIASES`.

`python tests/test_readme_tables.py` rewrites the generated table in README.md after a change.
"""

from __future__ import annotations

import re
from pathlib import Path

from llmrelay import PROVIDERS
from llmrelay.cloud import ALSO_READ, URL_FORMS
from llmrelay.providers import PREFIX_ALIASES, Provider, env_names

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- env-table: generated from llmrelay.PROVIDERS by tests/test_readme_tables.py -->", "<!-- end env-table -->"


def _codes(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _base_url_env(p: Provider) -> list[str]:
    names: list[str] = []
    for name in p.base_url_env + env_names(p, ("_BASE_URL", "_API_BASE")):
        if name not in names:
            names.append(name)
    return names


def _also(p: Provider) -> str:
    notes = [f"`{var}` (`{header}` header)" for header, var in p.env_headers]
    notes += [f"`{var}` (bearer token, in place of a key)" for var in p.token_env]
    if p.cloud:
        notes.append(ALSO_READ[p.cloud])
    return ", ".join(notes)


def env_table() -> str:
    rows = [
        "| provider | protocol | default base URL | API key env (first set wins) | base URL env (first set wins) | also read |",
        "|---|---|---|---|---|---|",
    ]
    for p in PROVIDERS.values():
        keys = _codes(p.key_env or env_names(p, ("_API_KEY",))) + ("" if p.requires_key else " (optional)")
        base = f"`{p.base_url}`" if p.base_url else URL_FORMS[p.cloud] if p.cloud else "(none: pass `base_url`)"
        rows.append(f"| `{p.name}` | {p.protocol} | {base} | {keys} | {_codes(_base_url_env(p))} | {_also(p)} |")
    return "\n".join(rows)


def _generated(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def test_env_table_is_generated_from_providers():
    assert _generated(README.read_text()) == env_table(), "stale: run `python tests/test_readme_tables.py`"


def test_prefix_table_lists_every_alias_and_its_provider():
    text = README.read_text()
    section = text[text.index("### Model strings from other libraries"):]
    section = section[: section.index("\n### ", 5)] if "\n### " in section[5:] else section
    rows = re.findall(r"^\| `([^`]+?)[:/]…` \| [^|]+ \| `([^`]+)` \|", section, re.M)
    documented = dict(rows)
    aliases = {prefix: target for prefix, target in PREFIX_ALIASES.items() if prefix != target}
    assert documented == aliases


if __name__ == "__main__":
    text = README.read_text()
    new = text.replace(_generated(text), env_table()) if BEGIN in text else text
    README.write_text(new)
    print("README.md updated" if new != text else "README.md already up to date")
