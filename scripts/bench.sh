#!/usr/bin/env bash
# Run every benchmark and print the figures against the targets.
#
# Usage: scripts/bench.sh [CRITERION FILTER...]
#   e.g. scripts/bench.sh            # everything (a few minutes on 2 cores)
#        scripts/bench.sh ipset      # only the criterion benchmarks matching "ipset"
#
# 1. `cargo bench --bench engine` (criterion; prints the address-data memory
#    footprint first), output kept in $OUT/criterion.log;
# 2. writes the 10,000-Deployment corpus (the bench binary's
#    RESIDENCY_GUARD_BENCH_WRITE_CORPUS mode) and times the release binary on
#    it end to end: `residency-guard check -f DIR --output json > /dev/null`
#    (with hyperfine when installed, else a timed loop);
# 3. prints a table: benchmark, median, target, pass/fail.
#
# Environment: BENCH_OUT (where logs go; default a temp dir),
# BENCH_RUNS (end-to-end runs, default 5), CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${BENCH_OUT:-$(mktemp -d)}"
RUNS="${BENCH_RUNS:-5}"
mkdir -p "$OUT"
CORPUS="$(mktemp -d)"
trap 'rm -rf "$CORPUS"' EXIT
export LC_ALL=C.UTF-8

log() { echo "bench: $*" >&2; }

# --- 1. criterion -------------------------------------------------------------
log "cargo bench --bench engine $* (log: $OUT/criterion.log)"
cargo bench --bench engine -- "$@" 2>&1 | tee "$OUT/criterion.log"

# --- 2. check end to end --------------------------------------------------------
log "building the release binary"
cargo build --release --bin residency-guard
BIN="$TARGET_DIR/release/residency-guard"
RESIDENCY_GUARD_BENCH_WRITE_CORPUS="$CORPUS" cargo bench --bench engine >&2
CMD=("$BIN" check -f "$CORPUS" --output json --now 2026-11-01T00:00:00Z)
CMD_TEXT="$(printf '%q ' "${CMD[@]}")"

set +e
"${CMD[@]}" > "$OUT/check-report.json"
rc=$?
set -e
log "check exit code: $rc (1 expected: some Deployments are denied)"
if [ "$rc" -ne 1 ]; then
  log "unexpected exit code; stderr follows"
  "${CMD[@]}" 2>&1 >/dev/null | head -20 >&2 || true
  exit 1
fi

E2E_S=""
if command -v hyperfine >/dev/null 2>&1; then
  hyperfine --warmup 1 --runs "$RUNS" --ignore-failure \
    --export-json "$OUT/hyperfine.json" "$CMD_TEXT> /dev/null" >&2
  # Median in seconds, without needing jq.
  E2E_S="$(tr -d ' \n' < "$OUT/hyperfine.json" | sed -n 's/.*"median":\([0-9.eE+-]*\).*/\1/p')"
else
  log "hyperfine not installed (apt-get install -y hyperfine); timing $RUNS runs with date"
  times=()
  for _ in $(seq "$RUNS"); do
    t0="$(date +%s.%N)"
    "${CMD[@]}" > /dev/null || true
    t1="$(date +%s.%N)"
    times+=("$(echo "$t1 - $t0" | bc -l 2>/dev/null || awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")
  done
  E2E_S="$(printf '%s\n' "${times[@]}" | sort -g | awk '{v[NR]=$1} END{print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}')"
fi
/usr/bin/env time -v true >/dev/null 2>&1 && {
  /usr/bin/env time -v "${CMD[@]}" 2> "$OUT/time-v.txt" > /dev/null || true
  RSS_KB="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/time-v.txt")"
} || RSS_KB=""

# --- 3. summary -------------------------------------------------------------------
echo
grep '^footprint' "$OUT/criterion.log" || true
echo
awk -v e2e="$E2E_S" -v rss="$RSS_KB" '
function ns(v, u) {
  if (u == "ps") return v / 1000; if (u == "ns") return v; if (u == "µs" || u == "us") return v * 1e3
  if (u == "ms") return v * 1e6; if (u == "s") return v * 1e9; return -1
}
function human(x) {
  if (x < 1e3) return sprintf("%.1f ns", x); if (x < 1e6) return sprintf("%.2f µs", x / 1e3)
  if (x < 1e9) return sprintf("%.2f ms", x / 1e6); return sprintf("%.3f s", x / 1e9)
}
function target(name) {
  if (name ~ /^guarantee\//) return 5e3
  if (name ~ /^full_verdict\//) return 200e3
  if (name ~ /^ipset\/subset\//) return 1e3
  if (name ~ /^ipset\/parse_list\//) return 5e6
  if (name ~ /^check\//) return 2e9
  return 0
}
function row(name, x, t) {
  printf "%-62s %12s %10s %s\n", name, human(x), (t > 0 ? "≤ " human(t) : "-"), (t > 0 ? (x <= t ? "PASS" : "FAIL") : "")
}
/^Benchmarking / { next }
/time: +\[/ {
  line = $0; sub(/^ +/, "", line)
  split(line, parts, "time:")
  name = parts[1]; gsub(/ +$/, "", name); if (name == "") name = prev
  vals = parts[2]; gsub(/[\[\]]/, "", vals); split(vals, f, " ")
  # f: low unit median unit high unit; report the median.
  med[name] = ns(f[3], f[4]); order[++n] = name
  next
}
{ if ($0 !~ /^ / && $0 != "") prev = $0 }
END {
  printf "%-62s %12s %10s %s\n", "benchmark (criterion median)", "measured", "target", ""
  for (i = 1; i <= n; i++) row(order[i], med[order[i]], target(order[i]))
  base = "egress/baseline_unrestricted_50_netpols"
  if (base in med) {
    for (k in med) if (k ~ /^egress\/mainland_only_50_netpols_(inside|2_outside)$/)
      row(k " − baseline", med[k] - med[base], 50e3)
  }
  base = "egress/baseline_unrestricted_100_governing"
  k = "egress/mainland_only_50_netpols_100_governing"
  if ((base in med) && (k in med)) row(k " − baseline", med[k] - med[base], 0)
  if (e2e != "") row("residency-guard check, 10,000 Deployments (binary)", e2e * 1e9, 2e9)
  if (rss != "") printf "%-62s %12s\n", "  max RSS of that run", rss " kB"
}' "$OUT/criterion.log" | tee "$OUT/summary.txt"
echo
log "logs in $OUT"
