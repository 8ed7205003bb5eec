#!/usr/bin/env bash
# The sandbox's stand-in for IsaacLab's launcher: `-p` runs Isaac Sim's python (here: the sandbox's python with
# only the image's packages on its path, as in the container), and prints what the real one prints first.
set -e
case "${1:-}" in
  -p|--python)
    shift
    echo "[INFO] Using python from: ${AMLWIRE_SANDBOX_PYTHON}"
    exec "${AMLWIRE_SANDBOX_PYTHON}" -S -B "$@"
    ;;
  *)
    echo "[ERROR] the sandbox's isaaclab.sh only runs -p (python); got: $*" >&2
    exit 2
    ;;
esac
