#!/usr/bin/env bash
# The main job: set up, build the elastic family of the built-in model (SmolLM2-135M),
# then host it on the native runtime (no torch in the hosting process) under a short
# recorded memory trace: print each transition, the whole process's memory, and the text
# generated while the model shrinks and grows under it.
# The first run converts the model and extracts the text into ~/.cache/elastiq (about a
# minute) and builds the family there (about two minutes); later runs reuse both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ART="${ELASTIQ_CACHE:-$HOME/.cache/elastiq}/elastic/smollm2-135m-v1"
# an artifact from before the native runtime (no native.json) is built again
if [ ! -f "$ART/native.json" ] || \
   ! .venv/bin/python -c "import sys; from elastiq.elastic import Artifact; Artifact(sys.argv[1])" "$ART" 2>/dev/null; then
    .venv/bin/elastiq build smollm2-135m --out "$ART" --max-kl 0.6 --overwrite
fi
exec .venv/bin/elastiq host "$ART" --trace examples/memory-trace.csv \
    --prompt "Write a short story about a robot who learns to paint." --max-new-tokens 80 "$@"
