"""Google Vertex AI: project, location, URL form and auth.

- Project: `GoogleAuth(project=)`, `GOOGLE_CLOUD_PROJECT` (or `GCLOUD_PROJECT`), else the
  project of the Application Default Credentials.
- Location: `GoogleAuth(location=)`, `GOOGLE_CLOUD_LOCATION` (or `GOOGLE_CLOUD_REGION`),
  default `global`. `global` is served by `aiplatform.googleapis.com`, a region by
  `{region}-aiplatform.googleapis.com`. `base_url=` / `VERTEX_BASE_URL` replace the
  `https://{host}/v1` API root (e.g. `/v1beta1`, a private endpoint).
- Gemini models: `{root}/projects/{p}/locations/{l}/publishers/google/models/{model}:streamGenerateContent?alt=sse`
  (the Gemini protocol's body). Claude models (`claude-...`): `.../publishers/anthropic/models/{model}:streamRawPredict`
  with the Anthropic Messages body, `anthropic_version: vertex-2023-10-16` and no `model` field.
- Auth, first match wins: an `api_key=` string (an OAuth access token) or a callable returning
  one (asked before every request); `GoogleAuth(token=, token_provider=, credentials=)`;
  `GOOGLE_OAUTH_ACCESS_TOKEN`; else Application Default Credentials through google-auth
  (`pip install llmrelay[google]`): `gcloud auth application-default login`,
  `GOOGLE_APPLICATION_CREDENTIALS`, the metadata server. google-auth credentials are
  refreshed before the request when they are expired or about to expire.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import MissingCredentialsError
from .given import given_auth

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ANTHROPIC_VERSION = "vertex-2023-10-16"
WAYS = [
    "pass an access token: api_key=... (a string, or a callable returning one) or Client(api_keys={'vertex': ...}), "
    "or set GOOGLE_OAUTH_ACCESS_TOKEN",
    "install google-auth (pip install llmrelay[google]) and use Application Default Credentials: "
    "`gcloud auth application-default login`, GOOGLE_APPLICATION_CREDENTIALS=key.json, or the metadata server",
    "pass api_key=llmrelay.cloud.GoogleAuth(credentials=..., project=..., location=...)",
]


@dataclass
class GoogleAuth:
    """Explicit Vertex settings: a token, a token provider, google-auth credentials; project, location."""

    token: str | None = None
    token_provider: Callable[[], str] | None = None
    credentials: Any = None
    project: str | None = None
    location: str | None = None


class _Refreshing:
    """A google-auth credentials object as a token provider: refreshed when not valid (expired or
    within google-auth's refresh margin), under a lock, before the request that needs it."""

    def __init__(self, credentials: Any):
        self.credentials = credentials
        self._lock = threading.Lock()
        self._request: Any = None

    def __call__(self) -> str:
        with self._lock:
            creds = self.credentials
            if not creds.valid:
                if self._request is None:
                    import urllib3
                    from google.auth.transport.urllib3 import Request

                    self._request = Request(urllib3.PoolManager(timeout=urllib3.Timeout(connect=10, read=30)))
                try:
                    creds.refresh(self._request)
                except Exception as exc:  # google-auth could not get a token: a typed error, nothing sent
                    raise MissingCredentialsError("vertex", ("GOOGLE_OAUTH_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"),
                                                  [*WAYS, f"({type(exc).__name__}: {exc})"]) from None
            return creds.token


class VertexAuth:
    """The auth object `build_request` uses: the Vertex URL form and a bearer token."""

    def __init__(self, root: str, project: str, location: str, token: Callable[[], str]):
        self.root = root.rstrip("/")
        self.project = project
        self.location = location
        self.token = token

    def prepare(self, call: Any, path: str, body: Any, headers: dict[str, str]) -> tuple[str, Any]:
        base = f"{self.root}/projects/{self.project}/locations/{self.location}/publishers"
        if call.provider.protocol == "anthropic":
            headers.pop("anthropic-version", None)
            body = {k: v for k, v in body.items() if k != "model"}
            body["anthropic_version"] = ANTHROPIC_VERSION
            return f"{base}/anthropic/models/{call.model}:streamRawPredict", body
        return f"{base}/google{path}", body  # path: /models/{model}:streamGenerateContent?alt=sse

    def sign(self, request: Any) -> None:
        request.headers.pop("x-goog-api-key", None)
        request.headers["authorization"] = f"Bearer {self.token()}"


def host_for(location: str) -> str:
    return "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"


def resolve(provider: Any, model: str, explicit: Any, explicit_base: str | None,
            env: Mapping[str, str]) -> tuple[str, VertexAuth]:
    given = given_auth(explicit, GoogleAuth, "token", "token_provider",
                       "vertex: api_key must be an access token (str), a callable or a GoogleAuth")
    project = given.project or env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT")
    location = given.location or env.get("GOOGLE_CLOUD_LOCATION") or env.get("GOOGLE_CLOUD_REGION") or "global"
    token: Callable[[], str] | None = None
    if given.token is not None:
        fixed = given.token
        token = lambda: fixed  # noqa: E731
    elif given.token_provider is not None:
        token = given.token_provider
    elif given.credentials is not None:
        token = _Refreshing(given.credentials)
    elif env.get("GOOGLE_OAUTH_ACCESS_TOKEN"):
        fixed = env["GOOGLE_OAUTH_ACCESS_TOKEN"]
        token = lambda: fixed  # noqa: E731
    elif env is os.environ:  # Client(env=...) reads that mapping only
        token, adc_project = _adc(provider)
        project = project or adc_project
    else:
        raise MissingCredentialsError(provider.name, provider.key_env, WAYS)
    if not project:
        raise MissingCredentialsError(provider.name, ("GOOGLE_CLOUD_PROJECT",), [
            "set GOOGLE_CLOUD_PROJECT", "pass api_key=llmrelay.cloud.GoogleAuth(project=...)",
            "use Application Default Credentials that name a project (gcloud config set project ...)"])
    root = explicit_base or f"https://{host_for(location)}/v1"
    return root.rstrip("/"), VertexAuth(root, project, location, token)


_ADC: list[Any] = []
_ADC_LOCK = threading.Lock()


def _adc(provider: Any) -> tuple[Callable[[], str], str | None]:
    with _ADC_LOCK:
        if not _ADC:
            try:
                import google.auth
                from google.auth.exceptions import DefaultCredentialsError
            except ImportError:
                raise MissingCredentialsError(provider.name, provider.key_env, WAYS) from None
            try:
                credentials, project = google.auth.default(scopes=list(SCOPES))
            except DefaultCredentialsError as exc:
                raise MissingCredentialsError(provider.name, provider.key_env, [*WAYS, f"(google-auth: {exc})"]) from None
            _ADC.append((_Refreshing(credentials), project))
        return _ADC[0]
