#!/usr/bin/env bash
# README command 1: on a fresh machine, set up, extract the packaged Gemma 3 270M over the built-in
# multilingual set into ./acts.zarr once, then tell the semantic-hub story from the store alone:
# cross-language similarity per layer, the logit lens on one Chinese sentence, language mass per layer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
STORE=${STORE:-./acts.zarr}
OUT=${OUT:-./results}
LIMIT=${LIMIT:-60}

echo "== extract: gemma3-270m over django-ui (first $LIMIT items × 10 languages) into $STORE"
actstore extract --model gemma3-270m --dataset django-ui --limit "$LIMIT" --store "$STORE"
actstore ls "$STORE"

echo; echo "== similarity en–zh from the store (mean-centred, then raw)"
actstore analyze similarity --store "$STORE" --model gemma3-270m --dataset django-ui --variants en,zh --out "$OUT"
actstore analyze similarity --store "$STORE" --model gemma3-270m --dataset django-ui --variants en,zh --no-center --out "$OUT"

echo; echo "== logit lens on one Chinese sentence, with the English translation of the next word as target"
actstore analyze logit-lens --store "$STORE" --model gemma3-270m --dataset django-ui --variant zh \
  --item "Algerian Arabic" --targets en-next-word --out "$OUT"

echo; echo "== language of the logit lens, layer by layer, on Chinese input"
actstore analyze languages --store "$STORE" --model gemma3-270m --dataset django-ui --variant zh --out "$OUT"

echo; echo "plots and tables are in $OUT/; the same results are saved under $STORE for collaborators"
