"""One way to reach the Kubernetes API, shared by kopf's login and amlwire's own client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubernetes import client, config

FIELD_MANAGER = "amlwire"


def load_configuration(
    kubeconfig: Path | None = None, pool_size: int = 36, context: str | None = None
) -> client.Configuration:
    """In-cluster credentials when running in a pod, else the given kubeconfig, else KUBECONFIG/~/.kube/config;
    `context` picks a kubeconfig context as kubectl's --context does.

    The pool holds a connection per handler thread (the client's default is five per CPU)."""
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = pool_size
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(context=context, client_configuration=configuration)
    return configuration


def bearer_token(configuration: client.Configuration) -> str | None:
    """The bearer token of a configuration, refreshed first when it comes from a projected token file."""
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)
    value = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    # in a pod the client stores "bearer <token>" (lower case); a kubeconfig gives "Bearer <token>"
    return token.strip() if token and scheme.lower() == "bearer" else value.strip()


def api_client(configuration: client.Configuration) -> client.ApiClient:
    return client.ApiClient(configuration)


# The client's generated signatures ask for its model classes; amlwire passes plain manifests (which the
# client serialises the same way), so its API objects are used untyped.
def core_api(api: client.ApiClient) -> Any:
    return client.CoreV1Api(api)


def custom_api(api: client.ApiClient) -> Any:
    return client.CustomObjectsApi(api)


def extensions_api(api: client.ApiClient) -> Any:
    return client.ApiextensionsV1Api(api)
