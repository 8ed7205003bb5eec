"""`./isaaclab.sh -p -m pip install ...` in the sandbox's image: installs the stand-ins under ../../index/ into
the job's own site folder (AMLWIRE_SANDBOX_INSTALL), and records what was asked for, pins included."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

INDEX = Path(__file__).resolve().parents[2] / "index"
# distribution -> the modules it brings (one stand-in may serve several distributions)
PROVIDES = {
    "mlflow": ["mlflow"],
    "mlflow-skinny": ["mlflow"],
    "azureml-mlflow": ["azureml"],
    "azure-ai-ml": ["azure_ai_ml"],
    "azure-identity": ["azure_identity"],
}
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<pin>(==|>=|<=|~=|>|<).+)?$")


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "install":
        print("ERROR: the sandbox's pip only installs", file=sys.stderr)
        return 2
    target = Path(os.environ["AMLWIRE_SANDBOX_INSTALL"])
    wanted = [a for a in argv[1:] if not a.startswith("-")]
    with open(target / "pip-requests.txt", "a") as log:
        for requirement in wanted:
            found = REQUIREMENT.match(requirement)
            name = found["name"].lower() if found else requirement
            if name not in PROVIDES:
                print(f"ERROR: Could not find a version that satisfies the requirement {requirement}", file=sys.stderr)
                return 1
            log.write(requirement + "\n")
            for module in PROVIDES[name]:
                _install(INDEX / module, target)
    print(f"Successfully installed {' '.join(wanted)}")
    return 0


def _install(source: Path, target: Path) -> None:
    for item in source.iterdir():  # each stand-in folder holds the top-level packages it installs
        destination = target / item.name
        if item.is_dir():
            shutil.copytree(item, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(item, destination)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
