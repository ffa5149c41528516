#!/usr/bin/env bash
# tau of the quickstart draft trained on the original data vs on the target's regenerated answers:
# train each recipe (regeneration and capture run first), then measure tau by speculative decoding with a
# chain of 7 on held-out prompts (greedy). The full size (STEPS=200 LIMIT=2000 PROMPTS=100) takes about
# 10 + 15 minutes on 2 idle cores; smaller settings write their own recipes, runs and stores:
#   STEPS=62 LIMIT=1000 PROMPTS=50 bash bench/regenerated-draft.sh
# (the original run keeps quickstart's 2000-conversation store; the regenerated one regenerates and
# captures LIMIT conversations, at least the STEPS x 16 that training reads.)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-200} LIMIT=${LIMIT:-2000} PROMPTS=${PROMPTS:-100}
dir=.cache/bench-recipes
mkdir -p "$dir"
root=$(pwd)
for recipe in quickstart quickstart-regenerated; do
  name="$recipe-s$STEPS-l$LIMIT"
  sed -e "s#\.\./#$root/#g" -e "s#max_steps: 200#max_steps: $STEPS#" \
    -e "s#limit: 2000 #limit: $LIMIT #" -e "s#stores/quickstart-regenerated#stores/quickstart-regenerated-l$LIMIT#" \
    "recipes/$recipe.yaml" > "$dir/$name.yaml"
  echo "== $name"
  npx specforge train --recipe "$dir/$name.yaml" --backend wasm
  npx specforge eval --recipe "$dir/$name.yaml" --backend wasm --draft-steps 7 --limit "$PROMPTS"
done
