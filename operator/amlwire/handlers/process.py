"""The operator process around kopf: its logging (what is noise, what is not), its memory (the SDKs' import-time
objects frozen, freed heap handed back to the OS) and the one thread that follows AML jobs."""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from amlwire.handlers import amljob
from amlwire.reconcile.poller import JobPoller
from amlwire.reconcile.services import Services

POLLER_THREAD = "amlwire-worker-poller"  # a worker too: the leak check in the tests covers it
log = logging.getLogger("amlwire")


class RequeueIsNotAnError(logging.Filter):
    """amlwire requeues with kopf.TemporaryError while Azure works; that is progress, not an error.

    kopf logs it at ERROR (and would post it as an Error event); the resource's conditions and amlwire's
    own events already say what is happening, so the record is lowered to INFO and worded as what it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "failed temporarily" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = str(record.msg).replace("failed temporarily", "will run again")
        return True


# The SDKs log every HTTP request and response, each token and each job at INFO: noise (and CPU) for an
# operator whose own logs and conditions say what happens. AMLWIRE_LOG_LEVEL=DEBUG lets them speak again.
QUIET_LOGGERS = ("azure", "msal", "urllib3")


# Handlers that succeed all the time by design: the drift timer ticks every few seconds per AttachedCompute and
# mostly finds nothing due; the running-jobs registry sees every AmlJob event. Their "succeeded" lines are DEBUG.
ROUTINE_SUCCESSES = ("Timer 'drift' succeeded", "Handler 'track_running' succeeded")


class RoutineSuccessesAreQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(ROUTINE_SUCCESSES) or log.isEnabledFor(logging.DEBUG)


class SignalsAreHandled(logging.Filter):
    """kopf warns that it ignores OS signals when it runs outside the main thread (the demo, the tests): there
    the host stops it with its stop flag, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "OS signals are ignored" not in record.getMessage()


def _filter_once(logger_name: str, kind: type[logging.Filter]) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def configure_logging(level: str) -> None:
    _filter_once("kopf.objects", RequeueIsNotAnError)
    _filter_once("kopf.objects", RoutineSuccessesAreQuiet)
    quiet_sdk_loggers(level)


def hush_signal_warning() -> None:
    _filter_once("kopf._core.reactor.running", SignalsAreHandled)


def quiet_sdk_loggers(level: str) -> None:
    """Set the SDK loggers' level, including those azure-ai-ml gives their own handler at import time."""
    target = logging.DEBUG if level == "DEBUG" else logging.WARNING
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".", 1)[0] in QUIET_LOGGERS]
    for name in (*QUIET_LOGGERS, *names):
        logger = logging.getLogger(name)
        logger.setLevel(target)
        if name.startswith("azure.ai.ml"):  # its own plain-text stderr handlers would break JSON logs
            logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]
            logger.propagate = True
    # "This is an experimental class" once per azure-ai-ml class amlwire builds: nothing for a user to act on
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(target if target == logging.DEBUG else logging.ERROR)


def warm_imports(level: str) -> None:
    """azure-ai-ml takes seconds to import; do it beside start-up, not inside the first reconcile."""
    import azure.ai.ml
    import azure.ai.ml.operations  # noqa: F401

    quiet_sdk_loggers(level)
    # The SDKs' import-time objects (about a million) would otherwise count as long-lived, and CPython only
    # runs a full collection once garbage reaches a quarter of them: the cyclic garbage every job
    # submission leaves would pile up to hundreds of MiB before it is freed (bench/scale.py).
    gc.collect()
    gc.freeze()


RELEASE_MEMORY_EVERY = 10.0  # seconds


@functools.cache
def _glibc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


def release_memory() -> None:
    """Hand the heap that job submissions left free back to the OS: glibc keeps it otherwise, and the operator's
    RSS would stay at its busiest minute's (bench/scale.py)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def start_poller(services: Services, computes: amljob.ComputeIndex) -> threading.Thread:
    """The one loop that follows AML jobs for the whole operator (see reconcile/poller.py)."""
    settings = services.settings
    updates = ThreadPoolExecutor(settings.job_update_threads, thread_name_prefix=POLLER_THREAD)
    poller = JobPoller(
        services.azure,
        services.watch,
        amljob.poller_update(services, computes),
        settings.job_poll_interval,
        read_rate=settings.job_poll_read_rate,
        updates=updates,
    )

    def loop() -> None:
        released = time.monotonic()
        try:
            while not services.shutdown.is_set():
                if time.monotonic() - released > RELEASE_MEMORY_EVERY:
                    released = time.monotonic()
                    release_memory()
                try:
                    delay = poller.tick()
                except Exception:  # the poller must outlive any surprise; the next tick tries again
                    log.exception("following AML jobs failed")
                    delay = poller.interval
                services.shutdown.wait(delay)
        finally:
            updates.shutdown(wait=True, cancel_futures=True)

    thread = threading.Thread(target=loop, name=POLLER_THREAD, daemon=True)
    thread.start()
    return thread
