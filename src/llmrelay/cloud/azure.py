"""Azure OpenAI (and Azure AI Foundry): endpoint, URL form and auth, read as the openai SDK reads them.

Endpoint: `base_url=`, `Client(base_urls={"azure": ...})` or `AZURE_OPENAI_ENDPOINT`
(`https://{resource}.openai.azure.com`, or a Foundry `https://{resource}.services.ai.azure.com`).
The model is the deployment name.

URL form:

- With an API version (`AzureAuth(api_version=)` or `OPENAI_API_VERSION`, e.g.
  `2024-10-21`): `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`
  (Responses: `{endpoint}/openai/responses?api-version=...`).
- Without one, or with `api_version="v1"`: the v1 API, `{endpoint}/openai/v1/chat/completions`
  (`/openai/v1/responses`), the deployment going in the body's `model`.

Auth, first match wins: an `api_key=` string or `AZURE_OPENAI_API_KEY` (the `api-key`
header); an `AzureAuth(token=...)`, `AzureAuth(token_provider=callable)` or a callable
`api_key=` (a Microsoft Entra ID bearer token, asked for before every request, so an
expiring token is renewed); `AZURE_OPENAI_AD_TOKEN`; else, with `azure-identity`
installed (`pip install llmrelay[azure]`), `DefaultAzureCredential` for the
`https://cognitiveservices.azure.com/.default` scope (its token is cached and renewed
five minutes before it expires).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import MissingCredentialsError
from .given import given_auth

SCOPE = "https://cognitiveservices.azure.com/.default"
WAYS = [
    "pass an API key: api_key=... or Client(api_keys={'azure': ...}), or set AZURE_OPENAI_API_KEY",
    "pass a Microsoft Entra ID token: api_key=AzureAuth(token=...) or set AZURE_OPENAI_AD_TOKEN",
    "pass a token provider: api_key=callable returning a token (e.g. azure.identity.get_bearer_token_provider(...)) "
    "or AzureAuth(token_provider=...)",
    "install azure-identity (pip install llmrelay[azure]) to use DefaultAzureCredential (az login, managed identity, "
    "workload identity, AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET)",
]
_REFRESH_MARGIN = 300.0  # renew a credential's token this many seconds before it expires


@dataclass
class AzureAuth:
    """Explicit Azure settings: a key, a bearer token, a token provider or an azure-identity
    credential; the API version (None: the v1 API); deployment name -> model (for prices)."""

    api_key: str | None = None
    token: str | None = None
    token_provider: Callable[[], str] | None = None
    credential: Any = None
    api_version: str | None = None
    endpoint: str | None = None
    deployments: Mapping[str, str] = field(default_factory=dict)
    _tokens: Any = field(default=None, repr=False, compare=False)  # the credential's token cache, across calls


class _CredentialTokens:
    """Tokens from an azure-identity credential, cached until shortly before they expire."""

    def __init__(self, credential: Any, scope: str = SCOPE):
        self.credential = credential
        self.scope = scope
        self._token: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            token = self._token
            if token is None or token.expires_on - _REFRESH_MARGIN <= time.time():
                try:
                    token = self._token = self.credential.get_token(self.scope)
                except Exception as exc:  # azure-identity found no usable credential: a typed error, nothing sent
                    raise MissingCredentialsError("azure", ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"),
                                                  [*WAYS, f"({type(exc).__name__}: {exc})"]) from None
            return token.token


class AzureOpenAIAuth:
    """The auth object `build_request` uses: Azure's URL form plus `api-key` or a bearer token."""

    def __init__(self, endpoint: str, api_version: str | None, api_key: str | None = None,
                 token: Callable[[], str] | None = None):
        self.endpoint = endpoint.rstrip("/")
        self.api_version = None if api_version in (None, "", "v1") else api_version
        self.api_key = api_key
        self.token = token

    def prepare(self, call: Any, path: str, body: Any, headers: dict[str, str]) -> tuple[str, Any]:
        if self.api_version is None:
            return f"{self.endpoint}/openai/v1{path}", body
        if path == "/chat/completions":
            return f"{self.endpoint}/openai/deployments/{call.model}{path}?api-version={self.api_version}", body
        return f"{self.endpoint}/openai{path}?api-version={self.api_version}", body

    def sign(self, request: Any) -> None:
        headers = request.headers
        headers.pop("authorization", None)
        if self.api_key is not None:
            headers["api-key"] = self.api_key
        else:
            headers["authorization"] = f"Bearer {self.token()}"  # type: ignore[misc]

    def secrets(self) -> list[str]:
        return [self.api_key] if self.api_key else []


def _endpoint(given: AzureAuth, explicit_base: str | None, env: Mapping[str, str]) -> str | None:
    url = explicit_base or given.endpoint or env.get("AZURE_OPENAI_ENDPOINT")
    if not url:
        return None
    url = url.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):  # accept the endpoint with the API root as well
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def resolve(provider: Any, model: str, explicit: Any, explicit_base: str | None,
            env: Mapping[str, str]) -> tuple[str, AzureOpenAIAuth]:
    given = given_auth(explicit, AzureAuth, "api_key", "token_provider",
                       "azure: api_key must be a key (str), a token provider (callable) or an AzureAuth")
    if given.deployments:
        from ..cost import map_model

        for deployment, served in given.deployments.items():
            map_model(f"{provider.name}:{deployment}", served)
    version = given.api_version or env.get("OPENAI_API_VERSION")
    key = given.api_key
    token: Callable[[], str] | None = None
    if key is None:
        if given.token is not None:
            fixed = given.token
            token = lambda: fixed  # noqa: E731
        elif given.token_provider is not None:
            token = given.token_provider
        elif given.credential is not None:
            if given._tokens is None or given._tokens.credential is not given.credential:
                given._tokens = _CredentialTokens(given.credential)
            token = given._tokens
        elif env.get("AZURE_OPENAI_API_KEY"):
            key = env["AZURE_OPENAI_API_KEY"]
        elif env.get("AZURE_OPENAI_AD_TOKEN"):
            fixed = env["AZURE_OPENAI_AD_TOKEN"]
            token = lambda: fixed  # noqa: E731
        elif env is os.environ:  # Client(env=...) reads that mapping only
            token = _default_credential(provider)
        else:
            raise MissingCredentialsError(provider.name, provider.key_env, WAYS)
    endpoint = _endpoint(given, explicit_base, env)
    if endpoint is None:
        raise MissingCredentialsError(provider.name, ("AZURE_OPENAI_ENDPOINT",), [
            "set AZURE_OPENAI_ENDPOINT (https://{resource}.openai.azure.com)",
            "pass base_url=... or Client(base_urls={'azure': ...})", "pass AzureAuth(endpoint=...)"])
    return endpoint, AzureOpenAIAuth(endpoint, version, key, token)


_DEFAULT: list[Any] = []


def _default_credential(provider: Any) -> Callable[[], str]:
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise MissingCredentialsError(provider.name, provider.key_env, WAYS) from None
    if not _DEFAULT:
        _DEFAULT.append(_CredentialTokens(DefaultAzureCredential()))
    return _DEFAULT[0]
