#!/usr/bin/env sh
# Run every benchmark in bench/ in turn with the current python (override with PYTHON=...).
# Extra arguments are passed to each script, e.g. `bench/run_all.sh --runs 50`.
set -eu
PYTHON="${PYTHON:-python}"
cd "$(dirname "$0")/.."
for script in bench/*.py; do
    echo "==> $script"
    "$PYTHON" "$script" "$@"
    echo
done
