"""What the handlers reach Azure and Kubernetes through: the ports, timings, locks and the job watch.

Built by the composition root (main.py) and handed to kopf handlers in kopf's memo; nothing imports the root.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from amlwire.config import Settings
from amlwire.reconcile.common import DriftSchedule, KeyedLocks, Timings
from amlwire.reconcile.poller import JobWatch
from amlwire.reconcile.ports import AzurePort, KubePort
from amlwire.reconcile.running import RunningJobs


@dataclass
class Services:
    settings: Settings
    azure: AzurePort
    kube: KubePort
    timings: Timings
    object_locks: KeyedLocks = field(default_factory=KeyedLocks)
    watch: JobWatch = field(default_factory=JobWatch)
    running: RunningJobs = field(default_factory=RunningJobs)
    drift: DriftSchedule = field(init=False)  # from settings.drift_interval
    # Set when the operator exits: background loops in threads end on it even if kopf never told them to stop.
    shutdown: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.drift = DriftSchedule(self.settings.drift_interval)
