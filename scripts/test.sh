#!/usr/bin/env bash
# One command from a fresh clone: install the dev and serve extras and run the whole test suite.
source "$(dirname "$0")/_venv.sh"
python -m pip install -q -e '.[dev,serve]' 2>&1 | grep -v '^WARNING: Location' >&2 || true
# The browser test of `retrieve serve` drives Debian's chromium through Playwright (which
# cannot download its own browser here). Install it when missing and we may; otherwise
# that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser test (apt-get)" >&2
  { apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
    || echo "could not install chromium; the browser test will skip" >&2
fi
exec python -m pytest -q -n 2 --dist loadfile "$@"
