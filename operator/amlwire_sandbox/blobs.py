"""Azure Blob Storage's data plane, just enough for azure-storage-blob to list and download what jobs wrote:
`https://<account>.blob.<STORAGE_SUFFIX>/<container>/<blob>` on the sandbox's own port, authorised as Azure
Storage does (a Storage Blob Data role for a bearer token; shared keys only when the account allows them; the
account's network rules)."""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from amlwire_sandbox import ids
from amlwire_sandbox.cloud import STORAGE_DATA_ROLES, STORAGE_WRITE_ROLES, Cloud
from amlwire_sandbox.datapath import open_to_the_internet
from amlwire_sandbox.state import Resource

STORAGE_SUFFIX = "sandbox.localtest"  # what the SDKs' cloud metadata calls storage_endpoint, before the port
BLOB_HOST = re.compile(rf"^(?P<account>[a-z0-9]{{3,24}})\.blob\.{re.escape(STORAGE_SUFFIX)}(?::\d+)?$", re.I)
RANGE = re.compile(r"bytes=(\d+)-(\d*)")
VERSION = "2025-01-05"


class BlobError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self, head: bool) -> web.Response:
        body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{self.code}</Code><Message>{escape(self.message)}'
        body += f"\nRequestId:sandbox\nTime:{_rfc1123(time.time())}</Message></Error>"
        headers = {"x-ms-error-code": self.code, "x-ms-version": VERSION}
        if head:
            return web.Response(status=self.status, headers=headers)
        return web.Response(status=self.status, body=body.encode(), content_type="application/xml", headers=headers)


def account_of(host: str) -> str | None:
    found = BLOB_HOST.match(host)
    return found["account"].lower() if found else None


class Blobs:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.state = cloud.state

    def write(self, account_id: str, container: str, name: str, content: bytes) -> None:
        self.state.blobs.setdefault(f"{account_id.lower()}/{container}", {})[name] = (content, self.state.now())

    def answer(
        self,
        account: str,
        method: str,
        path: str,
        query: dict[str, str],
        headers: Any,
        caller: str | None,
        audience: Any = None,
    ) -> web.Response:
        head = method == "HEAD"
        try:
            storage = self._account(account)
            container, _, blob = path.lstrip("/").partition("/")
            self._authorize(storage, container, headers, caller, write=method in ("PUT", "DELETE"), audience=audience)
            if not self._container_exists(storage, container):  # rule: storage.blob-errors
                raise BlobError(404, "ContainerNotFound", "The specified container does not exist.")
            stored = self.state.blobs.get(f"{storage.id.lower()}/{container}", {})
            if query.get("comp") == "list" and query.get("restype") == "container" and method == "GET":
                return self._list(account, container, stored, query)
            if method in ("GET", "HEAD") and blob:
                return self._blob(stored, blob, headers, head)
            raise BlobError(400, "UnsupportedHttpVerb", f"The sandbox's blob service does not serve {method} {path}.")
        except BlobError as error:
            return error.response(head)

    def _account(self, account: str) -> Resource:
        found = next((s for s in self.state.of_type(ids.STORAGE) if s.name.lower() == account), None)
        if found is None:  # in Azure its host does not resolve (see resolves); only a client bypassing DNS gets here
            raise BlobError(404, "AccountNotFound", f"No storage account {account} in the sandbox's world.")
        return found

    def resolves(self, account: str) -> bool:
        """Whether <account>.blob.<suffix> has a DNS record: only existing accounts do (rule storage.blob-errors)."""
        return any(s.name.lower() == account.lower() for s in self.state.of_type(ids.STORAGE))

    def _container_exists(self, storage: Resource, container: str) -> bool:
        if not container or f"{storage.id.lower()}/{container}" in self.state.blobs:
            return True
        return any(
            d.properties.get("containerName") == container
            and str(d.properties.get("accountName") or "").lower() == storage.name.lower()
            for d in self.state.of_type(ids.DATASTORE)
        )

    def _authorize(
        self, storage: Resource, container: str, headers: Any, caller: str | None, write: bool, audience: Any = None
    ) -> None:
        props = storage.properties
        if not open_to_the_internet(storage):  # rule: storage.network (a test process is on the public internet)
            raise BlobError(403, "AuthorizationFailure", "This request is not authorized to perform this operation.")
        authorization = headers.get("Authorization", "")
        if authorization.startswith("SharedKey"):  # rule: storage.shared-key (the signature is not checked)
            if props.get("allowSharedKeyAccess") is False:
                raise BlobError(
                    403,
                    "KeyBasedAuthenticationNotPermitted",
                    "Key based authentication is not permitted on this storage account.",
                )
            return
        if not authorization.startswith("Bearer ") or not caller:
            raise BlobError(401, "NoAuthenticationInformation", "Server failed to authenticate the request.")
        if not _storage_audience(audience, storage.name):  # rule: storage.blob-errors
            raise BlobError(
                401,
                "InvalidAuthenticationInfo",
                "Server failed to authenticate the request. Audience validation failed.",
            )
        scope = f"{storage.id}/blobServices/default/containers/{container}"
        # rule: storage.data-roles
        if not self.cloud.has_access(caller, scope, STORAGE_WRITE_ROLES if write else STORAGE_DATA_ROLES):
            raise BlobError(
                403,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            )

    def _list(
        self, account: str, container: str, stored: dict[str, tuple[bytes, float]], query: dict[str, str]
    ) -> web.Response:
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        blobs, prefixes = [], []
        for name in sorted(n for n in stored if n.startswith(prefix)):
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                folder = prefix + rest.split(delimiter, 1)[0] + delimiter
                if folder not in prefixes:
                    prefixes.append(folder)
                continue
            content, written = stored[name]
            blobs.append(
                f"<Blob><Name>{escape(name)}</Name><Properties><Creation-Time>{_rfc1123(written)}</Creation-Time>"
                f"<Last-Modified>{_rfc1123(written)}</Last-Modified><Etag>{_etag(name, written)}</Etag>"
                f"<Content-Length>{len(content)}</Content-Length><Content-Type>application/octet-stream</Content-Type>"
                "<BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier><LeaseStatus>unlocked</LeaseStatus>"
                "<LeaseState>available</LeaseState><ServerEncrypted>true</ServerEncrypted></Properties>"
                "<Metadata /></Blob>"
            )
        items = "".join(blobs) + "".join(f"<BlobPrefix><Name>{escape(p)}</Name></BlobPrefix>" for p in prefixes)
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://{account}.blob.'
            f'{STORAGE_SUFFIX}/" ContainerName="{escape(container)}"><Prefix>{escape(prefix)}</Prefix>'
            f"{f'<Delimiter>{escape(delimiter)}</Delimiter>' if delimiter else ''}<Blobs>{items}</Blobs>"
            "<NextMarker /></EnumerationResults>"
        )
        return web.Response(body=body.encode(), content_type="application/xml", headers={"x-ms-version": VERSION})

    def _blob(self, stored: dict[str, tuple[bytes, float]], name: str, headers: Any, head: bool) -> web.Response:
        if name not in stored:
            raise BlobError(404, "BlobNotFound", "The specified blob does not exist.")
        content, written = stored[name]
        answer = {
            "x-ms-version": VERSION,
            "x-ms-blob-type": "BlockBlob",
            "x-ms-creation-time": _rfc1123(written),
            "Last-Modified": _rfc1123(written),
            "ETag": _etag(name, written),
            "Accept-Ranges": "bytes",
            "x-ms-server-encrypted": "true",
        }
        wanted = RANGE.match(headers.get("x-ms-range") or headers.get("Range") or "")
        if head:
            return web.Response(headers={**answer, "Content-Length": str(len(content))})
        if wanted and content:
            start = int(wanted[1])
            end = min(int(wanted[2]) if wanted[2] else len(content) - 1, len(content) - 1)
            answer["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return web.Response(
                status=206, body=content[start : end + 1], headers=answer, content_type="application/octet-stream"
            )
        return web.Response(body=content, headers=answer, content_type="application/octet-stream")


def _rfc1123(moment: float) -> str:
    return formatdate(moment, usegmt=True)


def _etag(name: str, written: float) -> str:
    return '"0x8D' + ids.stable_uuid(name, repr(written)).replace("-", "")[:13].upper() + '"'


def _storage_audience(audience: Any, account: str) -> bool:
    """Storage accepts tokens for https://storage.azure.com or for the account's own endpoint."""
    found = audience if isinstance(audience, list) else [audience]
    wanted = {"https://storage.azure.com", f"https://{account.lower()}.blob.{STORAGE_SUFFIX}"}
    return any(str(a or "").rstrip("/").lower() in wanted for a in found)
