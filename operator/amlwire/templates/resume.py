"""Where a resumed IsaacLab rsl_rl training continues from: prints the train.py arguments that say so.

The previous attempt's checkpoint output has been copied into this attempt's (so the new output keeps the whole
chain); rsl_rl writes `<experiment>/<run>/model_<iteration>.pt` there. This picks the last run by name and its
highest iteration — rsl_rl's own rule (isaaclab_tasks.utils.get_checkpoint_path), never file times — and prints
`--resume --load_run RUN --checkpoint FILE` for train.py into ARGS_FILE, or nothing (with a note) when the
previous attempt saved no checkpoint, so training starts afresh. A file, not stdout: `./isaaclab.sh -p` prints
its own lines there. Usage: resume.py RUNS_FOLDER ARGS_FILE
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

try:
    from jobkit import StepFailed, Watchdog, run_step  # in the job, beside this script
except ImportError:  # imported from the amlwire package (its tests)
    from amlwire.templates.jobkit import StepFailed, Watchdog, run_step

ITERATION = re.compile(r"^model_(\d+)\.pt$")
SAFE = re.compile(r"^[A-Za-z0-9_.:+-]+$")  # run folders are timestamps: nothing a shell could misread


def last_checkpoint(root: Path) -> tuple[str, str, int] | None:
    """(run folder, checkpoint file, iteration) of the newest checkpoint under root, or None."""
    found = [p for p in root.glob("*/*/model_*.pt") if ITERATION.match(p.name)] if root.is_dir() else []
    if not found:
        return None
    best = max(found, key=lambda p: (p.parent.name, int(ITERATION.match(p.name)[1])))  # type: ignore[index]
    if not SAFE.match(best.parent.name):
        raise StepFailed(f"run folder {best.parent.name!r} has characters amlwire will not pass to train.py")
    return best.parent.name, best.name, int(ITERATION.match(best.name)[1])  # type: ignore[index]


def arguments(root: Path) -> list[str]:
    last = last_checkpoint(root)
    if last is None:
        print(f"amlwire: no checkpoint under {root}: training starts afresh", file=sys.stderr)
        return []
    run, checkpoint, iteration = last
    print(f"amlwire: resuming from {run}/{checkpoint} (iteration {iteration})", file=sys.stderr)
    return ["--resume", "--load_run", run, "--checkpoint", checkpoint]


def main(watchdog: Watchdog) -> dict[str, Any]:
    if len(sys.argv) != 3:
        raise StepFailed("usage: resume.py RUNS_FOLDER ARGS_FILE")
    args = arguments(Path(sys.argv[1]))
    Path(sys.argv[2]).write_text(" ".join(args) + "\n")
    return {"arguments": args}


if __name__ == "__main__":
    run_step("resume", main)
