"""The reliability tier reuses the integration harness: a fresh sandbox per test over the session's apiserver."""

from tests.e2e.conftest import cluster, harness

__all__ = ["cluster", "harness"]
