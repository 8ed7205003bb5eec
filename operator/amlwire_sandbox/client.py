"""A client of the sandbox's control API (/_sandbox/...), for tests, benches and the demo."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import requests


class SandboxClient:
    def __init__(self, base_url: str, ca_file: Path) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        # per request, because requests lets REQUESTS_CA_BUNDLE from the environment override session.verify
        self.verify = str(ca_file)

    def _call(self, method: str, path: str, timeout: float = 30, **kwargs: Any) -> Any:
        response = self.session.request(
            method, f"{self.base_url}/_sandbox{path}", timeout=timeout, verify=self.verify, **kwargs
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def calls(self, since: int = 0, timeout: float = 30) -> list[dict[str, Any]]:
        return self._call("GET", "/calls", params={"since": since}, timeout=timeout)

    def counts(self, since: int = 0) -> Counter[str]:
        return Counter(self._call("GET", "/counts", params={"since": since}))

    def register_issuer(self, issuer: str, ca_file: Path | None = None) -> None:
        self._call("POST", "/issuers", json={"issuer": issuer, "caFile": str(ca_file) if ca_file else None})

    def service_account_token(self, cluster_id: str, subject: str, **claims: Any) -> str:
        """A token as the cluster's kubelet projects it (audience, expiresIn, notBefore: seconds)."""
        body = {"cluster": cluster_id, "subject": subject, **claims}
        return str(self._call("POST", "/service-account-token", json=body)["token"])

    def access_token(self, principal: str, audience: str | None = None, expires_in: int = 3600) -> str:
        """An access token of the sandbox's Entra for `principal` (a signed-in user, in tests)."""
        body = {"oid": principal, "aud": audience, "expiresIn": expires_in}
        return str(self._call("POST", "/access-token", json=body)["token"])

    def exchanges(self) -> list[dict[str, Any]]:
        """Each client assertion the sandbox's Entra accepted: issuer, subject, clientId, kid, iat."""
        return list(self._call("GET", "/exchanges"))

    def issued_tokens(self) -> list[str]:
        return self._call("GET", "/tokens")

    def mark(self) -> int:
        """A position in the call log: pass it as `since` to see only later calls."""
        return self._call("GET", "/mark")["next"]

    def writes(self, since: int = 0) -> list[dict[str, Any]]:
        return [
            c
            for c in self.calls(since)
            if c["method"] in ("PUT", "PATCH", "POST", "DELETE") and not c["route"].startswith(("entra.", "sandbox."))
        ]

    def add_fault(self, **spec: Any) -> str:
        return self._call("POST", "/faults", json=spec)["id"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/state")

    def resource(self, resource_id: str) -> dict[str, Any] | None:
        resources = {k.lower(): v for k, v in self.state()["resources"].items()}
        return resources.get(resource_id.rstrip("/").lower())

    def require(self, resource_id: str) -> dict[str, Any]:
        """A resource that must exist (a KeyError naming it if not)."""
        found = self.resource(resource_id)
        if found is None:
            raise KeyError(f"no resource {resource_id} in the sandbox")
        return found

    def resources_under(self, prefix: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.state()["resources"].items() if k.lower().startswith(prefix.lower())}

    def patch(self, resource_id: str, body: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Any:
        return self._call(
            "PATCH", "/resource", params={"id": resource_id}, json={"body": body or {}, "extra": extra or {}}
        )

    def create(self, resource_id: str, type_: str, body: dict[str, Any], extra: dict[str, Any] | None = None) -> Any:
        return self._call(
            "PUT", "/resource", params={"id": resource_id, "type": type_}, json={"body": body, "extra": extra or {}}
        )

    def delete(self, resource_id: str) -> None:
        response = self.session.delete(
            f"{self.base_url}/_sandbox/resource", params={"id": resource_id}, timeout=30, verify=self.verify
        )
        if response.status_code not in (200, 404):
            response.raise_for_status()

    def timing(self, **changes: Any) -> dict[str, Any]:
        return self._call("PATCH", "/timing", json=changes)

    def arm_limits(self, **changes: Any) -> dict[str, Any]:
        """Change ARM's request budget (sizes, refill rates, enabled); the buckets start full."""
        return self._call("PATCH", "/arm-limits", json=changes)

    def add_job_rule(self, match: dict[str, Any], **set_: Any) -> None:
        self._call("POST", "/job-rules", json={"match": match, "set": set_})

    def clear_job_rules(self) -> None:
        self._call("DELETE", "/job-rules")

    def jobs(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Every job with its status now (the sandbox brings each up to date: slow with thousands)."""
        return self._call("GET", "/jobs", timeout=timeout)

    def job_log(self, job: str) -> str:
        """What the job printed (user_logs/std_log.txt), for the jobs the sandbox executes."""
        response = requests.get(f"{self.base_url}/_sandbox/logs/{job}", timeout=30, verify=self.verify)
        response.raise_for_status()
        return response.text

    def blob_names(self, prefix: str = "") -> list[str]:
        """Every blob in the sandbox's storage as ACCOUNT-ID/CONTAINER/NAME (lower-case account), under `prefix`."""
        return [
            f"{container}/{name}"
            for container, names in self._call("GET", "/state")["blobs"].items()
            for name in names
            if f"{container}/{name}".startswith(prefix)
        ]

    def judge(self, compute_id: str) -> dict[str, Any]:
        return self._call("GET", "/judge", params={"compute": compute_id})

    def reset(self) -> None:
        self._call("POST", "/reset")
