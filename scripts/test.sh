#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, generated-file drift,
# engine purity, then every test. `.ci/run` calls exactly this.
#
# On two cores the end-to-end tests spend most of their time waiting on the
# API server, so once the test binaries are built the tests run in the
# background while clippy and the drift checks use the CPU, and the
# browser for the report render installs meanwhile. Each step's output is
# printed whole, in order.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

# The report render needs Debian's chromium and a CJK font: install them
# while everything else runs (apt is network-bound).
if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi 'CJK\|WenQuanYi'; then
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  ( $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -qq chromium fonts-noto-cjk >/dev/null ) \
    >"$work/browser.log" 2>&1 &
  browser_pid=$!
  pids+=("$browser_pid")
else
  browser_pid=
fi

nextest=false
if cargo nextest --version >/dev/null 2>&1; then nextest=true; fi

step "build the tests"
if $nextest; then
  cargo nextest run --locked --no-run
else
  cargo test --locked --no-run
fi

log="$work/tests.log"
if $nextest; then
  ( cargo nextest run --locked --no-fail-fast >"$log" 2>&1; echo $? >"$work/tests.rc" ) &
else
  ( cargo test --locked --no-fail-fast >"$log" 2>&1; echo $? >"$work/tests.rc" ) &
fi
tests_pid=$!
pids+=("$tests_pid")
echo "tests started in the background"

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "engine purity"
scripts/check-engine-purity.sh

step "generated files are up to date (crds/, deploy/, example outputs in the docs, the report screenshots)"
cargo run --quiet --locked -- crdgen --check
if [ -x scripts/render-deploy.sh ]; then scripts/render-deploy.sh --check; fi
scripts/render-docs.sh --check
RESIDENCY_GUARD_BIN=${RESIDENCY_GUARD_BIN:-target/debug/residency-guard} scripts/render-report.sh --check target/report-check

step "tests"
wait "$tests_pid" || true
cat "$log"
tests_rc=$(cat "$work/tests.rc" 2>/dev/null || echo 1)
if $nextest; then
  # Doc tests are not run by nextest.
  cargo test --locked --doc 2>&1 | tee -a "$log"
  ran=$(grep -Eo '[0-9]+ tests? run' "$log" | sed -n 1p | grep -Eo '^[0-9]+' || echo 0)
else
  ran=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
fi
if [ "$tests_rc" -ne 0 ]; then
  echo "error: tests failed (exit $tests_rc)" >&2
  exit 1
fi
if [ "${ran:-0}" -eq 0 ]; then
  echo "error: no tests ran" >&2
  exit 1
fi
echo "tests ran: $ran"

step "the report in a real browser (headless Chromium: PNG of each language and a PDF)"
if [ -n "$browser_pid" ]; then
  if ! wait "$browser_pid"; then
    cat "$work/browser.log" >&2
    echo "error: installing chromium and fonts-noto-cjk failed" >&2
    exit 1
  fi
fi
RESIDENCY_GUARD_BIN=${RESIDENCY_GUARD_BIN:-target/debug/residency-guard} scripts/render-report.sh
if $nextest; then
  e2e=$(grep -Ec 'PASS \[.*residency-guard::e2e ' "$log" || true)
  echo "end-to-end tests passed (real API server): $e2e"
  if [ "${CI:-}" = true ] && [ "$e2e" -eq 0 ]; then
    echo "error: CI=true and no end-to-end test ran against a cluster" >&2
    exit 1
  fi
fi
