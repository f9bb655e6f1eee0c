#!/usr/bin/env bash
# The main job: set up, then compare formats on the built-in model (SmolLM2-135M) and text.
# The first run converts the model and extracts the text into ~/.cache/elastiq (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/elastiq compare smollm2-135m --formats int8,int4,mxfp4,nvfp4,nxfp4 --max-tokens 2048 "$@"
