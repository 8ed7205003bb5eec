"""kopf's session to the apiserver is amlwire's: it authenticates as the operator, and its connections are
bounded (kopf's own opens one per concurrent request, each with a 256 KiB TLS buffer)."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from amlwire.config import Settings
from amlwire.handlers.operator import KOPF_CONNECTIONS_BESIDE_WORKERS, login

pytestmark = pytest.mark.kube
WORKERS = 4


def test_a_burst_of_kopf_requests_shares_a_bounded_pool_and_is_authenticated(control_plane):
    async def burst() -> tuple[list[int], int]:
        memo = kopf.Memo(settings=Settings(kubeconfig=control_plane.kubeconfig, max_workers=WORKERS))
        context = await login(memo=memo)
        session = context.aiohttp_session
        connector = session.connector
        assert connector is not None
        most = 0

        async def read() -> int:
            nonlocal most
            async with session.get(f"{context.server}/apis/amlwire.io/v1alpha1/amljobs") as response:
                most = max(most, len(connector._acquired))  # connections in use at this moment
                await response.read()
                return response.status

        try:
            return list(await asyncio.gather(*(read() for _ in range(60)))), most
        finally:
            await session.close()

    statuses, most = asyncio.run(burst())
    assert statuses == [200] * 60
    assert 1 < most <= WORKERS + KOPF_CONNECTIONS_BESIDE_WORKERS
