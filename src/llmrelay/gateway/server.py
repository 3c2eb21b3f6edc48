"""Running the gateway: uvicorn (with httptools and uvloop when installed), one process or N workers
(supervised by workers.py: SIGHUP reloads every worker in place, `/metrics` covers the whole server).

Chosen by measurement (`make bench-gateway`, bench/README.md): a bare ASGI app
under uvicorn + httptools + uvloop. The upstream client is llmrelay's own aiohttp
transport.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from .app import GatewayApp
from .config import load

__all__ = ["serve", "factory", "check", "probe_store"]

CONFIG_ENV = "LLMRELAY_GATEWAY_CONFIG"


def check(path: str) -> list[str]:
    """Load and validate the config (raises ConfigError naming the line); returns its warnings."""
    config = load(path)
    from .state import Gateway

    Gateway(config).client.close()  # every target resolves (keys, providers) the way serving would
    return list(config.warnings)


def probe_store(path: str) -> str | None:
    """For `llmrelay serve --check`: one bounded PING of the `limits:` store (none: None). A warning when it
    does not answer, saying what the gateway would do; never an error, since the gateway serves without it
    as `on_store_error` says. Not part of `check`, which a SIGHUP reload runs too."""
    import asyncio

    config = load(path)
    if config.limits is None:
        return None
    from ..redact import redact_dsn
    from .limits import LocalLimits, RedisLimits

    async def ping() -> bool:
        store = RedisLimits(config.limits, LocalLimits())  # type: ignore[arg-type]
        try:
            return await store.reachable()
        finally:
            await store.aclose()

    if asyncio.run(ping()):
        return None
    then = {"local": "each process would count the limits on its own",
            "open": "requests would be admitted without limits",
            "closed": "keys with limits would get 503"}.get(config.limits.on_store_error, "")
    return (f"the limits store {redact_dsn(config.limits.store)} does not answer within "
            f"{config.limits.timeout:g} s: with on_store_error: {config.limits.on_store_error}, {then} until it does")


def factory() -> GatewayApp:
    """For `uvicorn --factory` and worker processes: the config path comes from LLMRELAY_GATEWAY_CONFIG."""
    from .workers import STATE_ENV

    if os.environ.get(STATE_ENV):
        import signal

        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a worker of `serve --workers`: SIGHUP is a reload, never an exit
    return GatewayApp(os.environ[CONFIG_ENV], tune_gc=True)


def _server_options() -> dict[str, Any]:
    # proxy_headers off: uvicorn would otherwise wrap the app in its X-Forwarded-* middleware, one more
    # coroutine and a header scan per request, to rewrite `scope["client"]` and `scope["scheme"]`, which
    # the gateway never reads (no access log, no per-address rule)
    opts: dict[str, Any] = {"lifespan": "on", "access_log": False, "server_header": False, "date_header": False,
                            "proxy_headers": False}
    opts["http"] = "httptools" if importlib.util.find_spec("httptools") else "h11"
    opts["loop"] = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return opts


def serve(path: str, host: str = "127.0.0.1", port: int = 4000, workers: int = 1, log_level: str = "warning",
          ready_file: str | None = None) -> None:
    import uvicorn

    load(path)  # fail now, with the line, not inside a worker
    os.environ[CONFIG_ENV] = os.path.abspath(path)
    opts = _server_options()
    if workers > 1:
        from . import workers as shared

        config = uvicorn.Config("llmrelay.gateway.server:factory", factory=True, host=host, port=port, workers=workers,
                                log_level=log_level, timeout_graceful_shutdown=30, **opts)
        sock = config.bind_socket()
        state = os.environ[shared.STATE_ENV] = shared.make_state_dir()
        try:
            shared.supervisor(config, [sock], os.path.abspath(path), state, check).run()
        except KeyboardInterrupt:
            pass
        finally:
            shared.cleanup(state)
            sock.close()
        return
    app = GatewayApp(os.path.abspath(path), tune_gc=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30, **opts)
    uvicorn.Server(config).run()
