"""The sandbox's application state: the world, Azure's resources and operations, its Entra, its blob plane and
its jobs, shared by the HTTP handlers (app.py) and reset between tests."""

from __future__ import annotations

from typing import Any

import jwt

from amlwire_sandbox.blobs import Blobs
from amlwire_sandbox.cloud import Cloud
from amlwire_sandbox.jobs import Jobs
from amlwire_sandbox.state import ArmError, State
from amlwire_sandbox.tokens import Issuers, SigningKey
from amlwire_sandbox.world import World


class Sandbox:
    """The application state shared by the handlers."""

    def __init__(self, world: World, base_url: str, seed: int = 0) -> None:
        self._jobs: Jobs | None = None
        self.world = world
        self.base_url = base_url
        self.seed = seed
        self.signer = SigningKey()  # Entra's: signs the access tokens it issues (rule entra.signed-tokens)
        self.issuers = Issuers()  # whose client assertions Entra can verify (rule entra.assertion)
        self.reset()

    def access_token(self, claims: dict[str, Any]) -> str:
        return self.signer.sign(claims)

    def verified_claims(self, token: str) -> dict[str, Any]:
        """The claims of an access token this Entra issued, or 401 as ARM answers."""
        try:
            return self.signer.verify(token)
        except jwt.ExpiredSignatureError as error:
            expired = "The access token expiry UTC time is in the past."
            raise ArmError(401, "ExpiredAuthenticationToken", expired) from error
        except jwt.PyJWTError as error:
            raise ArmError(401, "InvalidAuthenticationToken", f"The access token is invalid. {error}") from error

    def reset(self) -> None:
        if self._jobs is not None:
            self._jobs.stop()
        self.state = State(self.world, self.base_url, self.seed)
        self.cloud = Cloud(self.state)
        self.blobs = Blobs(self.cloud)
        self._jobs = Jobs(self.cloud, self.blobs)
        with self.state.lock:
            self.cloud.seed(self.world)

    @property
    def jobs(self) -> Jobs:
        assert self._jobs is not None  # built by reset()
        return self._jobs
