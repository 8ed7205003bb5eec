"""Entra ID's workload identity token exchange, its OpenID configuration, and the cloud metadata endpoint."""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
from aiohttp import web

from amlwire_sandbox.http import Call, json_response
from amlwire_sandbox.router import route
from amlwire_sandbox.state import AUDIENCE
from amlwire_sandbox.tokens import TokenRejected, unverified, verify


def _token_error(code: str, description: str, number: int = 70021) -> web.Response:
    return json_response({"error": code, "error_description": description, "error_codes": [number]}, status=400)


def _verified(call: Call, assertion: str, issuer: str) -> dict[str, Any]:
    """The assertion's claims once its signature (by its issuer's keys: the OpenID discovery document and JWKS
    at the issuer URL, or the key the sandbox holds as a world cluster's issuer), exp, nbf and audience hold."""
    if not call.sandbox.issuers.knows(issuer) and call.cloud.cluster_with_issuer(issuer) is not None:
        call.sandbox.issuers.hold(issuer)  # a world cluster with no apiserver of its own: the sandbox is its issuer
    checks = {"issuer": issuer, "audience": AUDIENCE, "options": {"require": ["exp", "iss", "sub", "aud"]}}
    try:
        try:
            return verify(assertion, call.sandbox.issuers.keys(issuer), **checks)
        except jwt.InvalidSignatureError:  # the issuer may have rotated its keys: fetch them once more
            return verify(assertion, call.sandbox.issuers.keys(issuer, refresh=True), **checks)
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as error:
        raise TokenRejected(
            "AADSTS700024", f"AADSTS700024: Client assertion is not within its valid time range. {error}"
        ) from error
    except jwt.InvalidAudienceError as error:
        raise _audience_refused(assertion) from error
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as error:
        raise TokenRejected(
            "AADSTS700027", f"AADSTS700027: Client assertion failed signature validation. {error}"
        ) from error
    except jwt.PyJWTError as error:
        raise TokenRejected("AADSTS50027", f"AADSTS50027: JWT token is invalid or malformed. {error}") from error


def _audience_refused(assertion: str) -> TokenRejected:
    return TokenRejected(
        "AADSTS700212",
        "AADSTS700212: No matching federated identity record found for presented assertion audience "
        f"'{unverified(assertion)[1].get('aud')}'.",
    )


def _refused(rejected: TokenRejected) -> web.Response:
    return _token_error("invalid_client", rejected.message, int(rejected.code.removeprefix("AADSTS")))


@route("POST", "entra.token", "/{tenant}/oauth2/v2.0/token", authenticated=False)
def token(call: Call) -> web.Response:
    """Entra's client-assertion exchange, in Entra's order (rule entra.assertion): the application, a federated
    credential matching the assertion's issuer and subject, its audience, then the assertion's signature and
    validity against the issuer's published keys."""
    form = call.form()
    assertion, client_id, scope = form.get("client_assertion"), form.get("client_id", ""), form.get("scope", "")
    if not assertion:
        return _token_error(
            "invalid_request",
            "AADSTS900144: only client assertions (workload identity) are supported by the amlwire sandbox.",
        )
    try:
        header, claims = unverified(assertion)
    except TokenRejected as rejected:
        return _refused(rejected)
    identity = call.cloud.identity_by_client_id(client_id)
    if identity is None:
        return _token_error(
            "unauthorized_client",
            f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory.",
        )
    issuer, subject = str(claims.get("iss")), str(claims.get("sub"))
    fic = call.cloud.matching_fic(identity.id, issuer, subject)  # rule: entra.fic-match
    if fic is None:
        return _token_error(
            "invalid_client",
            "AADSTS70021: No matching federated identity record found for "
            f"presented assertion. Assertion Issuer: '{issuer}'. Assertion "
            f"Subject: '{subject}'. Assertion Audience: '{claims.get('aud')}'.",
        )
    audiences: list[Any] = claims["aud"] if isinstance(claims.get("aud"), list) else [claims.get("aud")]
    if AUDIENCE not in audiences:
        return _refused(_audience_refused(assertion))
    if not call.cloud.fic_effective(fic):
        return _token_error(
            "invalid_client",
            "AADSTS70021: No matching federated identity record found "
            "(the federated credential was created moments ago and is still propagating).",
        )
    try:
        _verified(call, assertion, issuer)  # rule: entra.assertion
    except TokenRejected as rejected:
        return _refused(rejected)
    now, tenant = int(time.time()), call.params["tenant"]
    issued = call.sandbox.access_token(
        {
            "aud": scope.removesuffix("/.default"),
            "iss": f"{call.base_url}/{tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "oid": identity.properties["principalId"],
            "appid": client_id,
            "tid": tenant,
            "xms_mirid": identity.id,
            "uti": f"canary{secrets.token_hex(12)}",  # unique per token: a leak test can find each one
        }
    )
    call.state.issued_tokens.append(issued)
    call.state.exchanges.append(
        {
            "issuer": issuer,
            "subject": subject,
            "clientId": client_id,
            "kid": header.get("kid"),
            "iat": claims.get("iat"),
        }
    )
    return json_response({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": issued})


@route("GET", "entra.openid", "/{tenant}/v2.0/.well-known/openid-configuration", authenticated=False)
def openid_configuration(call: Call) -> web.Response:
    base, tenant = call.base_url, call.params["tenant"]
    return json_response(
        {
            "issuer": f"{base}/{tenant}/v2.0",
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        }
    )


@route("GET", "entra.keys", "/{tenant}/discovery/v2.0/keys", authenticated=False)
def signing_keys(call: Call) -> web.Response:
    """The keys Entra signs access tokens with: what ARM, Storage and AML verify them by."""
    return json_response({"keys": [call.sandbox.signer.jwk()]})


@route("GET", "metadata.endpoints", "/metadata/endpoints", authenticated=False)
def cloud_metadata(call: Call) -> web.Response:
    base = call.base_url
    return json_response(
        [
            {
                "name": "AmlwireSandbox",
                "portal": "https://portal.azure.com",
                "resourceManager": base + "/",
                "authentication": {
                    "loginEndpoint": base + "/",
                    "audiences": [base + "/"],
                    "tenant": "common",
                    "identityProvider": "AAD",
                },
                "suffixes": {
                    "storage": "core.windows.net",
                    "keyVaultDns": ".vault.azure.net",
                    "acrLoginServer": "azurecr.io",
                },
            }
        ]
    )
