#!/usr/bin/env bash
# tau of the quickstart draft trained on the original data vs on the target's regenerated answers:
# train each recipe (regeneration and capture run first), then measure tau by speculative decoding with a
# chain of 7 on 100 held-out prompts (greedy). Long: about 10 + 15 minutes on 2 cores.
# Usage: bash bench/regenerated-draft.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for recipe in quickstart quickstart-regenerated; do
  echo "== $recipe"
  npx specforge train --recipe "recipes/$recipe.yaml" --backend wasm
  npx specforge eval --recipe "recipes/$recipe.yaml" --backend wasm --draft-steps 7 --limit 100
done
