"""Tokens as Entra issues and checks them (rules entra.assertion, entra.signed-tokens).

The sandbox's Entra signs every access token it issues (RS256, a `kid` its JWKS publishes) and ARM, the blob
plane and MLflow verify that signature and the expiry: an unsigned or forged token is 401
InvalidAuthenticationToken, as Azure answers. A client assertion (the projected service-account token) is
verified against its issuer's keys: the OpenID discovery document and JWKS at the issuer URL (fetched over
HTTPS with the CA the issuer was registered with), or, for the world's AKS clusters, the keys the sandbox holds
as their OIDC issuer.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

LEEWAY = 60  # seconds of clock skew Entra tolerates on exp and nbf


class TokenRejected(Exception):
    """A token or assertion that does not verify: `code` is Azure's (AADSTS... for Entra, an ARM code else)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class SigningKey:
    """An RSA key that signs JWTs and publishes itself as a JWK."""

    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    private: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this key signed, once signature and expiry hold (any audience)."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self.private.public_key(),
            algorithms=["RS256"],
            leeway=LEEWAY,
            options={"verify_aud": False, "require": ["exp"]},
        )
        return claims

    def jwk(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**found, "kid": self.kid, "use": "sig", "alg": "RS256"}


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a JWT, before any check (to find who signed it)."""
    try:
        return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise TokenRejected("AADSTS50027", f"AADSTS50027: JWT token is invalid or malformed. {error}") from error


def verify(token: str, keys: list[dict[str, Any]], **checks: Any) -> dict[str, Any]:
    """The claims of `token` once its signature (by one of `keys`, a JWKS's) and times hold; PyJWT's errors."""
    header = jwt.get_unverified_header(token)
    matching = [k for k in keys if k.get("kid") == header.get("kid")] or ([] if header.get("kid") else keys)
    if not matching:
        raise jwt.InvalidSignatureError(f"no key with kid {header.get('kid')!r}")
    last: Exception | None = None
    for key in matching:
        try:
            public = jwt.PyJWK(key).key
            found: dict[str, Any] = jwt.decode(token, public, algorithms=["RS256", "ES256"], leeway=LEEWAY, **checks)
            return found
        except jwt.InvalidSignatureError as error:
            last = error
    assert last is not None
    raise last


@dataclass
class IssuerKeys:
    """Where an issuer's signing keys come from: held by the sandbox, or fetched from its discovery document."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    ca_file: str | None = None
    fetched_at: float = 0.0


class Issuers:
    """The OIDC issuers Entra trusts assertions from (the world's AKS clusters, registered apiservers)."""

    def __init__(self) -> None:
        self._issuers: dict[str, IssuerKeys] = {}
        self._cluster_keys: dict[str, SigningKey] = {}
        self._lock = threading.Lock()

    def hold(self, issuer: str) -> SigningKey:
        """The key the sandbox signs a world cluster's service-account tokens with (it is that OIDC issuer)."""
        with self._lock:
            key = self._cluster_keys.get(issuer)
            if key is None:
                key = self._cluster_keys[issuer] = SigningKey()
                self._issuers[issuer] = IssuerKeys([key.jwk()])
            return key

    def knows(self, issuer: str) -> bool:
        with self._lock:
            return issuer in self._issuers

    def register(self, issuer: str, ca_file: str | None) -> None:
        """An issuer whose discovery document and JWKS are served at its URL (a kube-apiserver)."""
        with self._lock:
            self._issuers[issuer] = IssuerKeys(ca_file=ca_file)

    def keys(self, issuer: str, refresh: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            found = self._issuers.get(issuer)
        if found is None:  # not one the sandbox can reach: nothing leaves 127.0.0.1
            raise TokenRejected(
                "AADSTS50166", f"AADSTS50166: Request to External OIDC endpoint failed for issuer '{issuer}'."
            )
        if issuer in self._cluster_keys or (found.keys and not refresh):
            return found.keys
        found.keys = _fetch_jwks(issuer, found.ca_file)
        found.fetched_at = time.time()
        return found.keys


def _fetch_jwks(issuer: str, ca_file: str | None) -> list[dict[str, Any]]:
    """OpenID discovery at the issuer, then its jwks_uri, as Entra does for a federated credential's issuer."""
    context = ssl.create_default_context(cafile=ca_file)
    try:
        discovery = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", context)
        keys = _get_json(str(discovery["jwks_uri"]), context).get("keys") or []
    except (OSError, ValueError, KeyError) as error:
        raise TokenRejected(
            "AADSTS50166", f"AADSTS50166: Request to External OIDC endpoint failed for issuer '{issuer}': {error}"
        ) from error
    return [k for k in keys if isinstance(k, dict)]


def _get_json(url: str, context: ssl.SSLContext) -> dict[str, Any]:
    with urllib.request.urlopen(url, context=context, timeout=5) as answer:  # noqa: S310 (an https issuer)
        found: dict[str, Any] = json.loads(answer.read())
        return found
