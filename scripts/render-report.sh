#!/usr/bin/env bash
# Look at the report as a person does: render the HTML of `residency-guard
# report` on the bundled example with headless Chromium (Debian's
# `chromium`, installed here if missing, with a CJK font so the Chinese
# view is not boxes) to a PNG of each language and a PDF, and fail when a
# render fails or comes out empty.
#
#   scripts/render-report.sh [OUT_DIR]          # default target/report-render
#   scripts/render-report.sh --update-docs      # also refresh docs/report-*.png
#   scripts/render-report.sh --check            # fail when docs/report-*.png are stale
#
# The screenshots are checked through the page they were taken of:
# --update-docs records the SHA-256 of the example's HTML in
# docs/report-screenshots.sha256, and --check (no browser needed) renders
# the HTML again and compares. The HTML is deterministic (a fixed --now);
# the PNGs are not compared byte for byte, since Chromium's rasteriser and
# the installed fonts give different pixels on different machines.
#
# RESIDENCY_GUARD_BIN names the binary (default: cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."

update_docs=false
check=false
out=target/report-render
for arg in "$@"; do
  case "$arg" in
    --update-docs) update_docs=true ;;
    --check) check=true ;;
    *) out=$arg ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
digest_file=docs/report-screenshots.sha256

bin=${RESIDENCY_GUARD_BIN:-}
if [ -z "$bin" ]; then
  cargo build --quiet --locked
  bin=target/debug/residency-guard
fi

# The example with its running pods, at a fixed time so the pictures only
# change when the report does.
"$bin" report -f examples/cluster -f examples/running-pods \
  --now 2026-11-23T00:00:00Z --lang en -o "$out" >/dev/null
html="$out/residency-report.html"
digest=$(sha256sum "$html" | cut -d' ' -f1)

if $check; then
  recorded=$(cut -d' ' -f1 "$digest_file" 2>/dev/null || true)
  if [ "$digest" != "$recorded" ]; then
    echo "render-report: docs/report-en.png and docs/report-zh.png are stale: the example's HTML has SHA-256 $digest, the screenshots were taken of ${recorded:-nothing recorded} ($digest_file). Run scripts/render-report.sh --update-docs and commit the result." >&2
    exit 1
  fi
  echo "render-report: the screenshots are of the current report (HTML SHA-256 $digest)"
  exit 0
fi

if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi 'CJK\|WenQuanYi'; then
  echo "render-report: installing chromium and fonts-noto-cjk (Debian packages)"
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chrome() {
  # No network at all: the page must render from itself alone.
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update \
    --disable-sync --disable-extensions --hide-scrollbars \
    --user-data-dir="$profile" "$@" 2>>"$out/chromium.log"
}

rm -f "$out"/report-en.png "$out"/report-zh.png "$out"/report.pdf "$out/chromium.log"
chrome --screenshot="$out/report-en.png" --window-size=1280,2000 "file://$html#en"
chrome --screenshot="$out/report-zh.png" --window-size=1280,2000 "file://$html#zh"
chrome --no-pdf-header-footer --print-to-pdf="$out/report.pdf" "file://$html"

fail=0
for f in report-en.png report-zh.png report.pdf; do
  size=$(stat -c %s "$out/$f" 2>/dev/null || echo 0)
  if [ "$size" -lt 10000 ]; then
    echo "render-report: FAILED: $out/$f is missing or empty ($size bytes)" >&2
    fail=1
  else
    echo "render-report: $out/$f ($size bytes)"
  fi
done
if ! head -c 5 "$out/report.pdf" | grep -q '%PDF-'; then
  echo "render-report: FAILED: $out/report.pdf is not a PDF" >&2
  fail=1
fi
# The two views must differ: the language switch works without scripts.
if cmp -s "$out/report-en.png" "$out/report-zh.png"; then
  echo "render-report: FAILED: the English and Chinese screenshots are identical" >&2
  fail=1
fi
if [ "$fail" -ne 0 ]; then
  tail -20 "$out/chromium.log" >&2 || true
  exit 1
fi
if $update_docs; then
  cp "$out/report-en.png" docs/report-en.png
  cp "$out/report-zh.png" docs/report-zh.png
  echo "$digest  residency-report.html (examples/cluster + examples/running-pods, --now 2026-11-23T00:00:00Z)" >"$digest_file"
  echo "render-report: docs/report-en.png and docs/report-zh.png updated (HTML SHA-256 $digest in $digest_file)"
fi
