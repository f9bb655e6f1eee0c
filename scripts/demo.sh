#!/usr/bin/env bash
# The main job: set up, then cast a weight-like sample to every catalog format.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/elastiq formats "$@"
