#!/usr/bin/env bash
# The main fer-rs job on real FER2013: build the CLI, print the dataset table, write the cache.
# FER2013 is taken from $FER2013_CSV, else data/fer2013.csv(.gz); the cache goes to data/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
fer_setup

cargo build --release --locked -p fer
fer=target/release/fer
mkdir -p data
"$fer" stats
"$fer" preprocess --out data/fer2013.cache
"$fer" stats --data data/fer2013.cache > /dev/null
echo "main job done: cache at data/fer2013.cache"
