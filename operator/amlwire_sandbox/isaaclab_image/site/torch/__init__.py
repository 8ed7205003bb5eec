"""torch, as far as amlwire's evaluator and the sandbox's runners use it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def inference_mode() -> Iterator[None]:
    yield


no_grad = inference_mode
