#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, generated-file drift,
# engine purity, then every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "engine purity"
scripts/check-engine-purity.sh

step "generated files are up to date (crds/, deploy/, example outputs in the docs)"
cargo run --quiet --locked -- crdgen --check
if [ -x scripts/render-deploy.sh ]; then scripts/render-deploy.sh --check; fi
scripts/render-docs.sh --check

step "tests"
log=$(mktemp)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast 2>&1 | tee "$log"
  # Doc tests are not run by nextest.
  cargo test --locked --doc 2>&1 | tee -a "$log"
  ran=$(grep -Eo '[0-9]+ tests? run' "$log" | sed -n 1p | grep -Eo '^[0-9]+' || echo 0)
else
  cargo test --locked --no-fail-fast 2>&1 | tee "$log"
  ran=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
fi
if [ "${ran:-0}" -eq 0 ]; then
  echo "error: no tests ran" >&2
  exit 1
fi
echo "tests ran: $ran"

step "the report in a real browser (headless Chromium: PNG of each language and a PDF)"
RESIDENCY_GUARD_BIN=${RESIDENCY_GUARD_BIN:-target/debug/residency-guard} scripts/render-report.sh
if cargo nextest --version >/dev/null 2>&1; then
  e2e=$(grep -Ec 'PASS \[.*residency-guard::e2e ' "$log" || true)
  echo "end-to-end tests passed (real API server): $e2e"
  if [ "${CI:-}" = true ] && [ "$e2e" -eq 0 ]; then
    echo "error: CI=true and no end-to-end test ran against a cluster" >&2
    exit 1
  fi
fi
