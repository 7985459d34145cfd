#!/usr/bin/env bash
# One command from a fresh clone: install the dev, serve and ray extras and run the whole test suite.
source "$(dirname "$0")/_venv.sh"
step "installing retrieve with its dev, serve and ray extras"
pip_install -e '.[dev,serve,ray]' || true
done_step
# The browser test of `retrieve serve` drives Debian's chromium through Playwright (which
# cannot download its own browser here). Install it when missing and we may; otherwise
# that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  step "installing chromium for the browser test (apt-get)"
  { apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
    || echo "could not install chromium; the browser test will skip" >&2
  done_step
fi
exec python -m pytest -q -n 2 --dist loadfile "$@"
