"""AWS Bedrock: region, endpoint and SigV4 (through botocore) or a Bedrock API key (bearer).

Credentials, first match wins:

1. `api_key=` / `Client(api_keys={"bedrock": ...})`: a Bedrock API key (a string,
   sent as a bearer token) or an `AWSAuth(...)`.
2. `AWS_BEARER_TOKEN_BEDROCK`: a Bedrock API key.
3. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`) in the
   client's environment.
4. botocore's credential chain (`pip install llmrelay[aws]`; not with `Client(env=...)`, which
   reads only that mapping): env vars, the shared
   config and credentials files with `AWS_PROFILE`, SSO, assume-role, web
   identity, container and instance credentials. Refreshable credentials are
   refreshed by botocore before the request that needs them.

Region: `AWSAuth(region=)`, `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's
configured region. The endpoint is `https://bedrock-runtime.{region}.amazonaws.com`
(`BEDROCK_BASE_URL` or `base_url=` override it, e.g. a VPC endpoint).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import MissingCredentialsError
from .given import given_auth

SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime
_HEADERS_SET_BY_SIGNER = ("authorization", "x-amz-date", "x-amz-security-token")
_SESSIONS: dict[str | None, Any] = {}
_LOCK = threading.Lock()

WAYS = [
    "pass a Bedrock API key: api_key=... or Client(api_keys={'bedrock': ...}), or set AWS_BEARER_TOKEN_BEDROCK",
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)",
    "install botocore (pip install llmrelay[aws]) and use a profile (AWS_PROFILE, ~/.aws/config and "
    "~/.aws/credentials, `aws sso login`, assume-role), or run where the container/instance role applies",
    "pass api_key=llmrelay.cloud.AWSAuth(access_key_id=..., secret_access_key=..., profile=..., credentials=...)",
]


@dataclass
class AWSAuth:
    """Explicit Bedrock settings. Give a key pair, a profile, a botocore/boto3 credentials
    object (anything with `get_frozen_credentials()`), or a `bearer_token` (Bedrock API key)."""

    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    credentials: Any = None
    bearer_token: str | None = None


class BedrockAuth:
    """The auth object `build_request` uses: SigV4 for `bedrock` in `region`, or a bearer key."""

    def __init__(self, region: str, credentials: Any = None, bearer: str | None = None):
        self.region = region
        self.credentials = credentials
        self.bearer = bearer

    def prepare(self, call: Any, path: str, body: Any, headers: dict[str, str]) -> tuple[str, Any]:
        return call.base_url.rstrip("/") + path, body

    def sign(self, request: Any, now: Any = None) -> None:
        headers = request.headers
        for name in _HEADERS_SET_BY_SIGNER:
            headers.pop(name, None)
        if self.bearer is not None:
            headers["authorization"] = f"Bearer {self.bearer}"
            return
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        frozen = self.credentials.get_frozen_credentials()  # refreshes expiring credentials
        aws = AWSRequest(method=request.method, url=request.url, data=request.body, headers=dict(headers))
        SigV4Auth(frozen, SERVICE, self.region).add_auth(aws)
        for name, value in aws.headers.items():
            if name.lower() in _HEADERS_SET_BY_SIGNER:
                headers[name.lower()] = value

    def secrets(self) -> list[str]:
        return [self.bearer] if self.bearer else []


def _session(profile: str | None) -> Any:
    with _LOCK:
        session = _SESSIONS.get(profile)
        if session is None:
            import botocore.session

            session = botocore.session.Session(profile=profile)
            _SESSIONS[profile] = session
        return session


def _have_botocore() -> bool:
    import importlib.util

    return importlib.util.find_spec("botocore") is not None


def resolve(provider: Any, model: str, explicit: Any, explicit_base: str | None,
            env: Mapping[str, str]) -> tuple[str, BedrockAuth]:
    given = given_auth(explicit, AWSAuth, "bearer_token", None,
                       "bedrock: api_key must be a Bedrock API key (str) or an AWSAuth")
    profile = given.profile or env.get("AWS_PROFILE") or None
    region = given.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    bearer = given.bearer_token or (None if given.access_key_id or given.credentials or given.profile
                                    else env.get("AWS_BEARER_TOKEN_BEDROCK"))
    credentials = None
    if bearer is None:
        if given.credentials is not None:
            credentials = given.credentials
        elif given.access_key_id or (env.get("AWS_ACCESS_KEY_ID") and not given.profile):
            key = given.access_key_id or env.get("AWS_ACCESS_KEY_ID")
            secret = given.secret_access_key or (None if given.access_key_id else env.get("AWS_SECRET_ACCESS_KEY"))
            token = given.session_token or (None if given.access_key_id else env.get("AWS_SESSION_TOKEN"))
            if not secret:
                raise MissingCredentialsError(provider.name, provider.key_env, ["AWS_ACCESS_KEY_ID is set: also set AWS_SECRET_ACCESS_KEY", *WAYS])
            credentials = _static(provider, str(key), secret, token)
        elif env is os.environ and _have_botocore():  # Client(env=...) reads that mapping only
            session = _session(profile)
            credentials = session.get_credentials()
            if region is None:
                region = session.get_config_variable("region")
        if credentials is None:
            raise MissingCredentialsError(provider.name, provider.key_env, WAYS)
    if not region and explicit_base:
        region = _region_of(explicit_base)
    if not region and bearer is not None and explicit_base:
        region = "us-east-1"  # a bearer key on a given endpoint: the region is not part of the auth
    if not region:
        raise MissingCredentialsError(provider.name, ("AWS_REGION", "AWS_DEFAULT_REGION"), [
            "set AWS_REGION (or AWS_DEFAULT_REGION), e.g. us-east-1", "pass api_key=llmrelay.cloud.AWSAuth(region=...)",
            "set region in the profile of ~/.aws/config"])
    base = explicit_base or f"https://bedrock-runtime.{region}.amazonaws.com"
    return base.rstrip("/"), BedrockAuth(region, credentials, bearer)


def _region_of(url: str) -> str | None:
    """`https://bedrock-runtime.eu-west-1.amazonaws.com` -> "eu-west-1"."""
    host = url.split("://", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    if len(parts) >= 4 and parts[0].startswith("bedrock-runtime") and parts[-2] == "amazonaws":
        return parts[1]
    return None


class _StaticCredentials:
    """A fixed key pair, shaped like botocore's credentials (`get_frozen_credentials()`)."""

    __slots__ = ("access_key", "secret_key", "token")

    def __init__(self, access_key: str, secret_key: str, token: str | None):
        self.access_key, self.secret_key, self.token = access_key, secret_key, token

    def get_frozen_credentials(self) -> _StaticCredentials:
        return self


def _static(provider: Any, key: str, secret: str, token: str | None) -> Any:
    if not _have_botocore():
        raise MissingCredentialsError(provider.name, provider.key_env, [
            "SigV4 signing needs botocore: pip install llmrelay[aws]",
            "or use a Bedrock API key (AWS_BEARER_TOKEN_BEDROCK)"])
    return _StaticCredentials(key, secret, token)
