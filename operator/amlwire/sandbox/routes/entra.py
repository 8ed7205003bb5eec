"""Entra ID's workload identity token exchange, its OpenID configuration, and the cloud metadata endpoint."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from aiohttp import web

from amlwire.sandbox.http import Call, json_response
from amlwire.sandbox.router import route
from amlwire.sandbox.state import AUDIENCE, ArmError


def _jwt_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as error:
        raise ArmError(400, "invalid_client", "AADSTS50027: JWT token is invalid or malformed.") from error
    if not isinstance(claims, dict):
        raise ArmError(400, "invalid_client", "AADSTS50027: JWT token is invalid or malformed.")
    return claims


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def access_token(claims: dict[str, Any]) -> str:
    """A JWT-shaped (unsigned) access token, so callers and storage emulators can read its claims."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.sandbox"


def _token_error(code: str, description: str) -> web.Response:
    return json_response({"error": code, "error_description": description, "error_codes": [70021]}, status=400)


@route("POST", "entra.token", "/{tenant}/oauth2/v2.0/token", authenticated=False)
def token(call: Call) -> web.Response:
    form = call.form()
    client_id, assertion, scope = form.get("client_id", ""), form.get("client_assertion", ""), form.get("scope", "")
    if not assertion:
        return _token_error(
            "invalid_request",
            "AADSTS900144: only client assertions (workload identity) are supported by the amlwire sandbox.",
        )
    claims = _jwt_claims(assertion)
    identity = call.cloud.identity_by_client_id(client_id)
    if identity is None:
        return _token_error(
            "unauthorized_client",
            f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory.",
        )
    audiences: list[Any] = claims["aud"] if isinstance(claims.get("aud"), list) else [claims.get("aud")]
    fic = call.cloud.matching_fic(identity.id, str(claims.get("iss")), str(claims.get("sub")))  # rule: entra.fic-match
    if fic is None or AUDIENCE not in audiences:
        return _token_error(
            "invalid_client",
            "AADSTS70021: No matching federated identity record found for "
            f"presented assertion. Assertion Issuer: '{claims.get('iss')}'. Assertion "
            f"Subject: '{claims.get('sub')}'. Assertion Audience: '{claims.get('aud')}'.",
        )
    if not call.cloud.fic_effective(fic):
        return _token_error(
            "invalid_client",
            "AADSTS70021: No matching federated identity record found "
            "(the federated credential was created moments ago and is still propagating).",
        )
    now, tenant = int(time.time()), call.params["tenant"]
    issued = access_token(
        {
            "aud": scope.removesuffix("/.default"),
            "iss": f"{call.base_url}/{tenant}/",
            "iat": now,
            "exp": now + 3600,
            "oid": identity.properties["principalId"],
            "appid": client_id,
            "tid": tenant,
            "xms_mirid": identity.id,
            "uti": f"canary{secrets.token_hex(12)}",  # unique per token: a leak test can find each one
        }
    )
    call.state.issued_tokens.append(issued)
    return json_response({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": issued})


@route("GET", "entra.openid", "/{tenant}/v2.0/.well-known/openid-configuration", authenticated=False)
def openid_configuration(call: Call) -> web.Response:
    base, tenant = call.base_url, call.params["tenant"]
    return json_response(
        {
            "issuer": f"{base}/{tenant}/v2.0",
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        }
    )


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
