"""kopf settings (all in one startup handler), login, and the entry points that run the operator."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from amlwire import metrics
from amlwire.adapters.kube.client import bearer_token, load_configuration
from amlwire.config import Settings
from amlwire.handlers import amljob, attachedcompute
from amlwire.reconcile.poller import JobPoller
from amlwire.reconcile.services import Services

FINALIZER = "amlwire.io/finalizer"
WORKER_THREAD_PREFIX = "amlwire-worker"
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


class DriftTicksAreQuiet(logging.Filter):
    """The drift timer ticks every few seconds per AttachedCompute and mostly finds nothing due: its "succeeded"
    lines are kept for DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timer 'drift' succeeded") or log.isEnabledFor(logging.DEBUG)


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
    _filter_once("kopf.objects", DriftTicksAreQuiet)
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


def _warm_imports(level: str) -> None:
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
    poller = JobPoller(
        services.azure,
        services.watch,
        amljob.poller_update(services, computes),
        settings.job_poll_interval,
        read_rate=settings.job_poll_read_rate,
    )

    def loop() -> None:
        released = time.monotonic()
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

    thread = threading.Thread(target=loop, name=POLLER_THREAD, daemon=True)
    thread.start()
    return thread


class GenerationDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base (the last handled spec), plus metadata.generation.

    kopf runs update handlers on the difference from the last *successfully* handled spec. A spec that is
    changed while a reconcile keeps retrying, then changed back, equals that base: kopf would see nothing to do
    and drop the retry, leaving a generation nobody observes. With the generation in the base every new
    generation is a change, as a level-based operator needs (the update handlers follow metadata.generation)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        generation = body.get("metadata", {}).get("generation")
        if generation is not None:
            essence.setdefault("metadata", {})["generation"] = generation  # type: ignore[typeddict-unknown-key]
        return essence


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    config: Settings = memo.settings
    threading.Thread(target=_warm_imports, args=(config.log_level,), name="amlwire-warm-imports", daemon=True).start()
    configure_logging(config.log_level)
    metrics.STATES.clear()  # an operator started in this process before may have left objects behind
    memo.metrics_server = metrics.serve(config.metrics_port, config.metrics_address)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = GenerationDiffBase(prefix="amlwire.io", key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    # Our own pool, named, so that a thread dump says whose threads these are and stop() can drain it.
    settings.execution.executor = memo.executor = ThreadPoolExecutor(config.max_workers, WORKER_THREAD_PREFIX)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    # Objects handled at once: enough to keep the handler threads busy, not 1,000 handler invocations in memory
    # when 1,000 AmlJobs are created together (bench/scale.py: 370 MiB peak without a limit). A worker keeps
    # its slot until it has been idle this long, so a short idle time keeps the limit from slowing submission.
    settings.queueing.worker_limit = 4 * config.max_workers
    settings.queueing.idle_timeout = 1.0
    memo.poller = start_poller(memo.services, kwargs[attachedcompute.INDEX])
    settings.peering.standalone = config.peering is None
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.clusterwide = True
        settings.peering.priority = config.peering_priority()
        settings.peering.mandatory = True


def on_exit(memo: kopf.Memo, **_: Any) -> None:
    memo.services.shutdown.set()
    poller = getattr(memo, "poller", None)
    if poller is not None:
        poller.join(10)
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.shutdown()
        server.server_close()


def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Credentials from the same source as amlwire's own Kubernetes client; re-read on every 401."""
    configuration = load_configuration(memo.settings.kubeconfig)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        token=bearer_token(configuration),
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme="Bearer",
    )


def _memo(settings: Settings, services: Services) -> kopf.Memo:
    return kopf.Memo(settings=settings, services=services)


def build_registry(settings: Settings) -> kopf.OperatorRegistry:
    """All handlers, registered for these settings (timer intervals come from them)."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(configure)
    kopf.on.login(registry=registry)(login)
    kopf.on.cleanup(registry=registry)(on_exit)
    attachedcompute.register(registry, settings)
    amljob.register(registry, settings)
    return registry


def run(settings: Settings, services: Services) -> None:
    """Run the operator in the foreground until SIGINT/SIGTERM (what `amlwire run` does)."""
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=settings.priority,
        liveness_endpoint=settings.liveness_endpoint or None,
        memo=_memo(settings, services),
        registry=build_registry(settings),
        identity=peer_identity(),
    )


def peer_identity() -> Any:  # kopf's peering.Identity (a NewType of str, not exported)
    """How this replica names itself to its peers. kopf would ask the user database for the user's name,
    which has no entry when a pod runs as an arbitrary UID (OpenShift, or runAsUser without /etc/passwd)."""
    return f"amlwire@{socket.gethostname()}/{secrets.token_hex(4)}"


class BackgroundOperator:
    """The operator in a thread of this process, for tests and the demo: start(), then stop()."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="amlwire-operator", daemon=True)
        self._memo = _memo(settings, services)
        self.error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> BackgroundOperator:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"operator not ready after {timeout}s: {self.error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop kopf, then wait for every handler thread: a thread left running would hang interpreter exit."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._thread.join(timeout)
        self.services.shutdown.set()
        executor = getattr(self._memo, "executor", None)
        if isinstance(executor, ThreadPoolExecutor):
            executor.shutdown(wait=False, cancel_futures=True)
            for thread in list(executor._threads):
                thread.join(max(0.0, deadline - time.monotonic()))
        poller = getattr(self._memo, "poller", None)
        if poller is not None:
            poller.join(max(0.0, deadline - time.monotonic()))
        lingering = [
            t.name for t in [*getattr(executor, "_threads", ()), *([poller] if poller else [])] if t.is_alive()
        ]
        if self._thread.is_alive() or lingering:
            raise RuntimeError(f"operator did not stop within {timeout}s; still running: {lingering}")

    def _main(self) -> None:
        hush_signal_warning()
        try:
            asyncio.run(
                kopf.operator(
                    clusterwide=not self.settings.namespaces,
                    namespaces=self.settings.namespaces,
                    standalone=True,
                    liveness_endpoint=self.settings.liveness_endpoint or None,
                    memo=self._memo,
                    registry=build_registry(self.settings),
                    identity=peer_identity(),
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                )
            )
        except BaseException as error:  # reported through start()/error
            self.error = error
            self._ready.set()
