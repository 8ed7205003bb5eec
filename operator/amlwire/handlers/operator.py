"""kopf settings (all in one startup handler), login, and the entry points that run the operator; the process
around kopf (logging, memory, the job-following thread) is handlers/process.py."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import Any, cast

import aiohttp
import kopf

from amlwire import __version__, metrics
from amlwire.adapters.kube.client import FIELD_MANAGER, bearer_token, load_configuration
from amlwire.config import Settings
from amlwire.handlers import amljob, attachedcompute
from amlwire.handlers.process import configure_logging, hush_signal_warning, start_poller, warm_imports
from amlwire.reconcile.services import Services

FINALIZER = "amlwire.io/finalizer"
WORKER_THREAD_PREFIX = "amlwire-worker"
log = logging.getLogger("amlwire")


class GenerationDiffBase(kopf.StatusDiffBaseStorage):
    """kopf's diff base (the last handled spec), plus metadata.generation, kept in status.kopf: written in the
    same status patch as the pass's own status (an annotation costs a second patch of the object per handled
    change, and a second watch event for every operator watching it).

    kopf runs update handlers on the difference from the last *successfully* handled spec. A spec that is
    changed while a reconcile keeps retrying, then changed back, equals that base: kopf would see nothing to do
    and drop the retry, leaving a generation nobody observes. With the generation in the base every new
    generation is a change, as a level-based operator needs (the update handlers follow metadata.generation)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        essence = super().build(body=_without_what_the_essence_drops(body, extra_fields), extra_fields=extra_fields)
        generation = body.get("metadata", {}).get("generation")
        if generation is not None:
            essence.setdefault("metadata", {})["generation"] = generation  # type: ignore[typeddict-unknown-key]
        return essence


def _without_what_the_essence_drops(body: kopf.Body, extra_fields: Any) -> kopf.Body:
    """The body kopf's essence is built from, without managedFields (and status, unless a handler follows a field
    of it): kopf deep-copies the whole body on every event only to drop those, and they are most of an AmlJob
    (2 KiB of managedFields and 2 KiB of status of its 4.5). The essence is the same."""
    slim = {key: value for key, value in body.items() if key != "metadata"}
    slim["metadata"] = {key: value for key, value in body.get("metadata", {}).items() if key != "managedFields"}
    if not any(_top_level(field) == "status" for field in extra_fields or ()):
        slim.pop("status", None)
    return kopf.Body(cast(kopf.RawBody, slim))


def _top_level(field: Any) -> str:
    """The first key of a kopf field spec ("status.x" or ("status", "x"))."""
    return str(field).split(".", 1)[0] if isinstance(field, str) else str(next(iter(field), ""))


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    config: Settings = memo.settings
    threading.Thread(target=warm_imports, args=(config.log_level,), name="amlwire-warm-imports", daemon=True).start()
    configure_logging(config.log_level)
    metrics.STATES.clear()  # an operator started in this process before may have left objects behind
    memo.metrics_server = metrics.serve(config.metrics_port, config.metrics_address)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = GenerationDiffBase(field="status.kopf.last-handled-configuration")
    settings.posting.level = logging.WARNING
    # Our own pool, named, so that a thread dump says whose threads these are and stop() can drain it.
    settings.execution.executor = memo.executor = ThreadPoolExecutor(config.max_workers, WORKER_THREAD_PREFIX)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    # Objects handled at once: enough to keep the handler threads busy, not 1,000 handler invocations in memory
    # when 1,000 AmlJobs are created together (bench/scale.py). A cap on an *indexed* kind deadlocks kopf's
    # first indexing once its objects outnumber the cap (nolar/kopf#1243: the workers holding every slot wait
    # for the objects that cannot get one), so AmlJobs are not indexed (reconcile/running.py, seeded here
    # before any handler runs) and the cap always exceeds the AttachedComputes, the one indexed kind.
    memo.services.running.seed(memo.services.kube.running_aml_jobs())
    settings.queueing.worker_limit = 4 * config.max_workers + memo.services.kube.count_attached_computes()
    settings.queueing.idle_timeout = 1.0  # a worker gives its slot back after a second idle
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


KOPF_CONNECTIONS_BESIDE_WORKERS = 8  # kopf's watch streams (one per kind, peering) and its own requests
# The apiserver names the field manager of a write without fieldManager by its user agent, up to the first "/":
# kopf's writes (finalizers, status.kopf, the handlers' status) are amlwire's, in the same managedFields entry
# as the job poller's status writes instead of a second one listing the same fields again.
KOPF_AGENT = f"{FIELD_MANAGER}/{__version__} kopf/{version('kopf')}"


async def login(memo: kopf.Memo, **_: Any) -> kopf.AiohttpSession:
    """Credentials from the same source as amlwire's own Kubernetes client; re-read on every 401.

    kopf's own session has no bound on connections: in a burst every object it handles at once opened one, each
    with asyncio's 256 KiB TLS buffer (~120 of them, 30 MiB, at 3,000 AmlJobs). This one holds as many as the
    handler threads, plus kopf's watch streams."""
    configuration = load_configuration(memo.settings.kubeconfig)
    info = kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        token=bearer_token(configuration),
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme="Bearer",
    )
    connector = aiohttp.TCPConnector(
        limit=memo.settings.max_workers + KOPF_CONNECTIONS_BESIDE_WORKERS, ssl=info.as_ssl_context()
    )
    session = aiohttp.ClientSession(connector=connector, headers={**info.as_http_headers(), "User-Agent": KOPF_AGENT})
    return kopf.AiohttpSession(server=info.server, aiohttp_session=session)


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
