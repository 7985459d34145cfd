#!/usr/bin/env bash
# One command from a fresh clone: install the dev extra and run the whole test suite.
source "$(dirname "$0")/_venv.sh"
python -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' >&2 || true
exec python -m pytest -q -n 2 --dist loadfile "$@"
