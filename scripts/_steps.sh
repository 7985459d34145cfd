# Sourced by _venv.sh: installs that say what they are doing, a line per package, with the time taken.
# `pip -q` kept a first install silent for minutes; these show pip's own progress lines instead.

# step "what": print a numbered step line on stderr and start its clock.
STEP_N=0
step() {
  STEP_N=$((STEP_N + 1))
  STEP_START=$SECONDS
  echo "[$STEP_N] $*" >&2
}

# done_step: say how long the current step took.
done_step() {
  echo "    done in $((SECONDS - STEP_START)) s" >&2
}

# pip_install ARGS...: `python -m pip install ARGS`, showing one line per package it collects,
# builds or installs (and any error), without the local-index warnings. Returns pip's status.
pip_install() {
  python -m pip install "$@" 2>&1 \
    | { grep --line-buffered -E '^(Collecting|Downloading|Building|Installing collected|Successfully|ERROR)' || true; } \
    | sed -u 's/^/    /' >&2
  return "${PIPESTATUS[0]}"
}
