#!/usr/bin/env bash
# Two nights through the whole in-process loop, on a throwaway home: a small simulated world, a first
# model in smoke mode (a few optimizer steps on the CPU), then two nights of scoring, drift, ground
# truth and the policy's decision. `make check` runs it: the fastest proof that the pieces still fit.
set -euo pipefail
HOME_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nightshift-smoke.XXXXXX")
trap 'rm -rf "$HOME_DIR"' EXIT
export NIGHTSHIFT_HOME="$HOME_DIR" NIGHTSHIFT_CONFIG="${NIGHTSHIFT_CONFIG:-$(dirname "$0")/../nightshift.toml}"
unset NIGHTSHIFT_LAKE MLFLOW_TRACKING_URI
ns() { nightshift "$@" 2>>"$HOME_DIR/smoke.log" >>"$HOME_DIR/smoke.log" || { tail -40 "$HOME_DIR/smoke.log"; echo "smoke: nightshift $* failed (log above)"; exit 1; }; }
ns simulate --start 2026-01-01 --days 17 --rows-per-day 500 --seed 1
ns retrain --ds 2026-01-15 --init-from scratch --max-steps 30 --device cpu --window sliding
ns nightly --start 2026-01-16 --end 2026-01-17
grep -q "2026-01-17: scored 500 rows with v1" "$HOME_DIR/smoke.log" || { tail -20 "$HOME_DIR/smoke.log"; echo "smoke: night 2026-01-17 was not scored by v1"; exit 1; }
echo "smoke: a first model and two nights, scored, checked for drift and decided ($(grep -o 'decision=[A-Z_]*' "$HOME_DIR/smoke.log" | tail -1))"
