"""AppLauncher and SimulationApp as IsaacLab 2.x has them, with Isaac Sim's fast shutdown.

`SimulationApp.close()` ends the process with status 0 from inside its shutdown (Isaac Sim PR 717, IsaacLab
issue 6573): whatever went wrong before, a script that calls close() leaves as a success.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import _sandbox_sim as sim


class SimulationApp:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        print(f"[Isaac Sim] started (headless={config.get('headless')}, device={config.get('device')})")

    def is_running(self) -> bool:
        return True

    def close(self) -> None:
        sim.misbehave("close")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # fast shutdown: the process ends here, with 0  # rule: isaac.fast-shutdown


class AppLauncher:
    @staticmethod
    def add_app_launcher_args(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("app_launcher arguments")
        group.add_argument("--headless", action="store_true", default=False)
        group.add_argument("--viz", type=str, default=None)
        group.add_argument("--livestream", type=int, default=-1)
        group.add_argument("--enable_cameras", action="store_true", default=False)
        group.add_argument("--device", type=str, default="cuda:0")
        group.add_argument("--experience", type=str, default="")
        group.add_argument("--kit_args", type=str, default="")
        group.add_argument("--distributed", action="store_true", default=False)

    def __init__(self, launcher_args: argparse.Namespace | dict[str, Any] | None = None, **kwargs: Any) -> None:
        values = vars(launcher_args) if isinstance(launcher_args, argparse.Namespace) else dict(launcher_args or {})
        values.update(kwargs)
        sim.LAUNCHED.update(values)
        sim.misbehave("launch")
        self.app = SimulationApp({"headless": values.get("headless"), "device": values.get("device")})
        self.device_id = 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
