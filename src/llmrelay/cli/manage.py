"""`llmrelay models`, `llmrelay aliases`, `llmrelay keys`: what the CLI knows and keeps.

    llmrelay models                         providers, protocols, env vars
    llmrelay models --provider openai       model ids the price database knows for a provider
    llmrelay models default [MODEL]         show or set the default model of `chat`
    llmrelay aliases set fast groq:llama-3.1-8b-instant   (several models: a cascade)
    llmrelay aliases list | remove NAME | path
    llmrelay keys set openai                prompts for the key (or reads it from stdin)
    llmrelay keys list | remove NAME | path

The settings live in `cli/config.py`'s two files; only the CLI reads them.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from .common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, _err
from .config import ConfigError


def register(sub: Any) -> None:
    """Add `models`, `aliases` and `keys` to the `llmrelay` parser's subparsers."""
    models = sub.add_parser("models", help="list providers, or a provider's model ids; set the default model",
                            description="Without an action: the providers, their protocols and env vars.")
    models.add_argument("--json", action="store_true", help="one JSON object per line")
    models.add_argument("--provider", metavar="NAME",
                        help="list the model ids the price database (the `prices` extra) knows for NAME")
    actions = models.add_subparsers(dest="models_action", metavar="{list,default}")
    actions.add_parser("list", help="the providers (the default action)")
    default = actions.add_parser("default", help="show the default model, or set it")
    default.add_argument("model", nargs="?", help="provider:model or an alias")
    default.add_argument("--clear", action="store_true", help="forget the default model")

    aliases = sub.add_parser("aliases", help="names for models, kept in the config file",
                             description="Aliases work everywhere chat takes -m. They are kept in the "
                             "CLI's config file (`llmrelay aliases path`).")
    a = aliases.add_subparsers(dest="aliases_action", metavar="{list,set,remove,path}")
    p = a.add_parser("list", help="every alias")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p = a.add_parser("set", help="NAME stands for MODEL (several: a cascade, tried in order before any output)")
    p.add_argument("name")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p = a.add_parser("remove", help="forget an alias")
    p.add_argument("name")
    a.add_parser("path", help="the config file")
    aliases.set_defaults(sub_parser=aliases)

    keys = sub.add_parser("keys", help="API keys kept in a file only you can read (env vars still win)",
                          description="Stored keys are used by the CLI only, for a provider none of whose "
                          "env vars is set; --key wins over both. The library never reads this file.")
    k = keys.add_subparsers(dest="keys_action", metavar="{list,set,remove,path}")
    k.add_parser("list", help="the providers with a stored key (masked)")
    p = k.add_parser("set", help="store the key of a provider (prompted for, or read from stdin)")
    p.add_argument("provider")
    p.add_argument("--value", help="the key itself (else prompted for without echo, or read from stdin)")
    p = k.add_parser("remove", help="forget a stored key")
    p.add_argument("provider")
    k.add_parser("path", help="the keys file")
    keys.set_defaults(sub_parser=keys)


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "models":
            return _models(args)
        if args.command == "aliases":
            return _aliases(args)
        return _keys(args)
    except ConfigError as exc:
        _err(f"llmrelay: error: {exc}")
        return EXIT_ERROR


# -- models -----------------------------------------------------------------------------------


def _models(args: argparse.Namespace) -> int:
    if args.models_action == "default":
        return _default_model(args)
    if args.provider:
        return _provider_models(args.provider, args.json)
    from .render import PROVIDER_HEADERS, Out, base_url_env_vars, json_line, key_env_vars, provider_rows
    from ..providers import PROVIDERS

    if args.json:
        for p in PROVIDERS.values():
            print(json_line({
                "name": p.name, "protocol": p.protocol, "base_url": p.base_url,
                "api_key_env": list(key_env_vars(p)), "requires_key": p.requires_key,
                "base_url_env": list(base_url_env_vars(p)), "description": p.description,
            }))
        return EXIT_OK
    Out(sys.stdout).table(PROVIDER_HEADERS, provider_rows(PROVIDERS.values()),
                          title="Providers (use as provider:model; `llmrelay models --provider NAME` lists model ids)")
    return EXIT_OK


def _default_model(args: argparse.Namespace) -> int:
    from .config import load_config, save_config

    data = load_config()
    if args.clear:
        data.pop("default_model", None)
        save_config(data)
        print("no default model")
        return EXIT_OK
    if not args.model:
        current = data.get("default_model")
        if not current:
            _err("llmrelay: no default model (set one: llmrelay models default provider:model)")
            return EXIT_ERROR
        print(current)
        return EXIT_OK
    problem = check_model(args.model, data.get("aliases") or {})
    if problem:
        _err(f"llmrelay: error: {problem}")
        return EXIT_USAGE
    data["default_model"] = args.model
    path = save_config(data)
    print(f"default model: {args.model} (in {path})")
    return EXIT_OK


def check_model(model: str, aliases: dict[str, Any]) -> str | None:
    """Why `model` cannot be used (unknown provider…), or None. An alias is fine."""
    from ..errors import UnknownProviderError
    from ..providers import PROVIDERS, parse_model

    if model in aliases:
        return None
    try:
        parse_model(model, PROVIDERS, os.environ.get("LLMRELAY_DEFAULT_PROVIDER") or None)
    except UnknownProviderError as exc:
        return f"{exc}\nRun `llmrelay models` for the providers, `llmrelay aliases list` for the aliases."
    return None


def _provider_models(name: str, as_json: bool) -> int:
    from .render import Out, json_line
    from ..providers import PROVIDERS

    if name not in PROVIDERS:
        _err(f"llmrelay: error: unknown provider {name!r}; known: {', '.join(PROVIDERS)}")
        return EXIT_USAGE
    from ..cost.pricedb import GENAI_PROVIDERS, _load

    gid = GENAI_PROVIDERS.get(name, name)
    if gid is None:
        _err(f"llmrelay: {name} serves local models: there is no list to show (ask the server which it has, "
             f"e.g. `ollama list`); any model id it serves works as {name}:MODEL")
        return EXIT_ERROR
    missing = _load()
    if missing is not None:
        _err(f"llmrelay: error: no model list without the price database: {missing}\n"
             f"(pip install 'llmrelay[prices]'). Any model id {name} serves works as {name}:MODEL.")
        return EXIT_ERROR
    from ..cost import pricedb

    snapshot = pricedb._Genai.module.get_snapshot()
    provider = next((p for p in snapshot.providers if p.id == gid), None)
    if provider is None:
        _err(f"llmrelay: the price database has no models for {name}; any model id it serves works as {name}:MODEL")
        return EXIT_ERROR
    rows = [model_row(m) for m in provider.models]
    if as_json:
        for r in rows:
            print(json_line({"provider": name, **r}))
        return EXIT_OK
    cells = [[f"{name}:{r['id']}", r["name"] or "", _per_m(r["input_mtok"]), _per_m(r["output_mtok"]),
              "deprecated" if r["deprecated"] else ""] for r in rows]
    Out(sys.stdout).table(["model", "name", "input $/M", "output $/M", "status"], cells,
                          title=f"{name}: {len(rows)} models known to genai-prices {pricedb._Genai.version} "
                          "(others the provider serves work too)")
    return EXIT_OK


def model_row(m: Any) -> dict[str, Any]:
    prices = m.prices
    if isinstance(prices, list):  # prices that changed over time: the latest
        prices = prices[-1].prices if prices else None
    return {
        "id": m.id, "name": getattr(m, "name", None), "deprecated": bool(getattr(m, "deprecated", False)),
        "context_window": getattr(m, "context_window", None),
        "input_mtok": _number(getattr(prices, "input_mtok", None)),
        "output_mtok": _number(getattr(prices, "output_mtok", None)),
    }


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # a Decimal
    except (TypeError, ValueError):
        pass
    try:  # a tiered price: the first tier's base
        return float(value.base)
    except (AttributeError, TypeError, ValueError):
        return None


def _per_m(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# -- aliases ------------------------------------------------------------------------------------


def _aliases(args: argparse.Namespace) -> int:
    from .config import config_path, load_config, save_config
    from .render import json_line

    action = args.aliases_action or "list"
    if action == "path":
        print(config_path())
        return EXIT_OK
    data = load_config()
    table: dict[str, Any] = dict(data.get("aliases") or {})
    if action == "list":
        if getattr(args, "json", False):
            print(json_line(table))
        elif not table:
            print("(no aliases: llmrelay aliases set NAME provider:model)")
        else:
            width = max(map(len, table))
            for alias, target in sorted(table.items()):
                shown = " -> ".join(target) + "  (cascade)" if isinstance(target, list) else target
                print(f"{alias.ljust(width)}  {shown}")
        return EXIT_OK
    if action == "set":
        if ":" in args.name or "/" in args.name:
            _err(f"llmrelay: error: an alias cannot contain ':' or '/' ({args.name!r} reads as a model string)")
            return EXIT_USAGE
        for model in args.models:
            problem = check_model(model, {})
            if problem:
                _err(f"llmrelay: error: {problem}")
                return EXIT_USAGE
        table[args.name] = args.models[0] if len(args.models) == 1 else list(args.models)
        data["aliases"] = table
        save_config(data)
        print(f"{args.name} -> {' -> '.join(args.models)}")
        return EXIT_OK
    # remove
    if args.name not in table:
        _err(f"llmrelay: error: no alias {args.name!r}")
        return EXIT_ERROR
    del table[args.name]
    data["aliases"] = table
    save_config(data)
    print(f"removed {args.name}")
    return EXIT_OK


# -- keys ---------------------------------------------------------------------------------------


def _keys(args: argparse.Namespace) -> int:
    from .config import keys_path, load_keys, mask, save_keys
    from ..providers import PROVIDERS

    action = args.keys_action or "list"
    if action == "path":
        print(keys_path())
        return EXIT_OK
    keys = load_keys()
    if action == "list":
        if not keys:
            print("(no stored keys: llmrelay keys set PROVIDER)")
        for name, key in sorted(keys.items()):
            print(f"{name}  {mask(key)}")
        return EXIT_OK
    if args.provider not in PROVIDERS:
        _err(f"llmrelay: error: unknown provider {args.provider!r}; known: {', '.join(PROVIDERS)}")
        return EXIT_USAGE
    if action == "remove":
        if keys.pop(args.provider, None) is None:
            _err(f"llmrelay: error: no stored key for {args.provider}")
            return EXIT_ERROR
        save_keys(keys)
        print(f"removed the key of {args.provider}")
        return EXIT_OK
    value = args.value
    if value is None:
        if sys.stdin is not None and sys.stdin.isatty():
            value = getpass.getpass(f"{args.provider} API key: ")
        else:
            value = sys.stdin.read() if sys.stdin is not None else ""
    value = (value or "").strip()
    if not value:
        _err("llmrelay: error: empty key")
        return EXIT_USAGE
    keys[args.provider] = value
    path = save_keys(keys)
    print(f"stored the key of {args.provider} in {path} (readable by you only)")
    return EXIT_OK
