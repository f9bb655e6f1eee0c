#!/usr/bin/env bash
# The headless browser of tests/test_serve.py (the status page of `elastiq serve`): Debian's
# chromium and chromium-driver, installed where possible (called by scripts/setup.sh; safe to
# re-run, never fails the set-up). Without them that one test skips and says why.
set -uo pipefail
if { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } && command -v chromedriver >/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
  echo "browser: installing chromium chromium-driver ..."
  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }) \
    || echo "browser: could not install chromium chromium-driver; the status-page test will skip"
else
  echo "browser: chromium or chromedriver missing (install them as root: apt-get install chromium chromium-driver); the status-page test will skip"
fi
exit 0
