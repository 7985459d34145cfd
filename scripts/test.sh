#!/usr/bin/env bash
# One command from a fresh clone: install the dev extra and run the whole test suite.
source "$(dirname "$0")/_venv.sh"
step "installing retrieve with its dev extra"
pip_install -e '.[dev]' || true
done_step
exec python -m pytest -q -n 2 --dist loadfile "$@"
