#!/usr/bin/env bash
# One command from a fresh clone: install, index a real corpus, and query it.
# Uses ../shared/data/fsdd (spoken digits, CC BY-SA 4.0) when present, else a generated corpus.
source "$(dirname "$0")/_venv.sh"
step "installing retrieve and its dependencies"
pip_install -e . || true
done_step

FSDD=../shared/data/fsdd
if [ -d "$FSDD/recordings" ]; then
  corpus=$FSDD/recordings
  labels=(--labels "$FSDD/labels.csv")
  query=$corpus/7_jackson_32.wav
  filter="speaker != 'jackson'"
else
  corpus=.demo_corpus
  labels=()
  python -c "from retrieval.synth import write_demo_corpus; write_demo_corpus('$corpus', per_class=40)"
  query=$corpus/chirp/chirp_03.wav
  filter="path != 'chirp/chirp_03.wav'"
fi

set -x
retrieve index "$corpus" --index demo "${labels[@]}"
retrieve info --index demo
retrieve query "$query" --index demo -k 5
retrieve query "$query" --index demo -k 5 --where "$filter"
