"""`llmrelay serve`: an OpenAI-, Anthropic- and Responses-compatible HTTP gateway in front of llmrelay.

Extra `gateway` (uvicorn, httptools, uvloop, PyYAML, aiohttp). Never imported by
`import llmrelay`. Modules: `config` (YAML), `app` (the ASGI app), `handler` (one
request), `relay` (the fast path), `inbound` (request bodies), `out_*` (each
protocol's stream and body), `encode` (errors, usage shapes), `state` (one config
generation: client, keys, limits), `metrics` (Prometheus), `server` (uvicorn).
See docs/gateway.md.
"""
