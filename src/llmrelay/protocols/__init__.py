"""Wire protocols, one sans-IO module each: `encode(call) -> HTTPRequest` and `Decoder`.

Modules are imported on first use (`llmrelay.client.protocol_module`).
"""
