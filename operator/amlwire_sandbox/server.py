"""Run the sandbox: HTTPS on loopback with a trustme CA, in a background thread or in the foreground."""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiohttp import web

from amlwire_sandbox.app import create_app
from amlwire_sandbox.blobs import STORAGE_SUFFIX
from amlwire_sandbox.ports import free_port
from amlwire_sandbox.sandbox import Sandbox
from amlwire_sandbox.world import World


@dataclass
class SandboxServer:
    """The sandbox on https://HOST:PORT; `start()` returns once it accepts connections."""

    world: World
    ca_file: Path
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    sandbox: Sandbox = field(init=False)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def storage_endpoint(self) -> str:
        """The cloud's storage suffix for the SDKs (`https://<account>.blob.<this>`): resolve *.blob.<suffix> to
        127.0.0.1 (tests patch name resolution) and the blob data plane answers on this same port."""
        return f"{STORAGE_SUFFIX}:{self.port}"

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.sandbox = Sandbox(self.world, self.base_url, self.seed)

    def tls_context(self) -> ssl.SSLContext:
        ca = trustme.CA(organization_name="amlwire sandbox")
        cert = ca.issue_cert(self.host, "127.0.0.1", "localhost", f"*.blob.{STORAGE_SUFFIX}")
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    async def serve(self, ready: threading.Event | None = None) -> None:
        self._runner = web.AppRunner(create_app(self.sandbox), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls_context(), backlog=512)
        await site.start()
        if ready is not None:
            ready.set()

    def start(self, timeout: float = 10.0) -> SandboxServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def main() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.serve(ready))
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="amlwire-sandbox", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"sandbox did not start on {self.base_url}")
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        with self.sandbox.state.lock:
            self.sandbox.jobs.stop()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """Environment variables that point amlwire and the Azure SDKs at this sandbox."""
        return {
            "AMLWIRE_ARM_ENDPOINT": self.base_url,
            "AMLWIRE_CA_BUNDLE": str(self.ca_file),
            "AZURE_AUTHORITY_HOST": self.base_url,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
            "ARM_CLOUD_METADATA_URL": f"{self.base_url}/metadata/endpoints?api-version=2019-05-01",
        }
