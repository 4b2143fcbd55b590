#!/usr/bin/env bash
# Build the operator image offline, without Docker or a registry: the
# operator binary, exactly the shared libraries it links against, CA
# certificates and a nonroot user, packed by the cluster kit's `image-build`
# (../shared/cluster) into an OCI image-layout tarball.
#
#   scripts/build-image.sh [--binary PATH] [--out TAR] [--ref REF] [--import STATE_DIR]
#
#   --binary PATH   use this binary (e.g. target/debug/residency-guard, which
#                   the tests have built anyway) instead of building the
#                   release binary (`cargo build --release --locked`)
#   --out TAR       the tarball (default target/image/residency-guard.tar)
#   --ref REF       the image name (default localhost/residency-guard:<version>)
#   --import DIR    then import it into the kit worker of that STATE_DIR
#
# The image is the Dockerfile's, built differently: same entrypoint, command,
# user, environment and labels (tests/image.rs parses the Dockerfile's final
# stage and this tarball's OCI config and fails when they disagree). The
# Dockerfile's base, distroless/cc-debian12, provides glibc, libgcc, CA
# certificates and the user nonroot (65532); here each comes from this
# machine instead: `ldd` names every library and the loader, copied to the
# same path, and /etc/ssl/certs/ca-certificates.crt (the operator trusts the
# in-cluster CA for the API server; the bundle is what kube's native-roots
# fallback and SSL_CERT_FILE point at, as in the base image). The machine
# must have the glibc the binary was linked against (it was built here).
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" out=target/image/residency-guard.tar ref="" import=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --ref) ref="$2"; shift 2 ;;
    --import) import="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

kit=""
for candidate in "${RESIDENCY_GUARD_CLUSTER_KIT:-}" "$PWD/../shared/cluster" /work/shared/cluster; do
  if [ -n "$candidate" ] && [ -x "$candidate/image-build" ]; then kit="$candidate"; break; fi
done
[ -n "$kit" ] || { echo "build-image: no cluster kit with image-build (set RESIDENCY_GUARD_CLUSTER_KIT)" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
ref="${ref:-localhost/residency-guard:$version}"

if [ -z "$binary" ]; then
  started=$(date +%s)
  cargo build --release --locked --bin residency-guard
  echo "build-image: release build in $(( $(date +%s) - started )) s"
  binary=target/release/residency-guard
fi
[ -x "$binary" ] || { echo "build-image: $binary is not an executable" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$binary" "$root/residency-guard"

# Exactly what the binary links against, each at the path the loader uses.
libs=$(ldd "$binary" | awk '/=> \// { print $3 } /^\t\// { print $1 }')
if [ -z "$libs" ]; then
  echo "build-image: $binary links against nothing (static)"
fi
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  echo "build-image: + $lib"
done

install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# The users of distroless: root, nobody and nonroot (65532, the chart's UID).
mkdir -p "$root/etc" "$root/home/nonroot" "$root/tmp"
chmod 1777 "$root/tmp"
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF

# The Dockerfile's ENTRYPOINT, CMD, USER and ENV; PATH and SSL_CERT_FILE
# are what its base image sets.
mkdir -p "$(dirname "$out")"
IMAGE_USER=65532:65532 \
IMAGE_CMD='["serve"]' \
IMAGE_ENV=$'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nSSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\nMALLOC_ARENA_MAX=1' \
  "$kit/image-build" "$out" "$ref" "$root" /residency-guard

# image-build writes no labels: add the Dockerfile's to the config blob and
# rewrite the manifest and index that point at it (digests change).
python3 - "$out" Dockerfile <<'PY'
import hashlib, io, json, re, shlex, sys, tarfile

out, dockerfile = sys.argv[1], sys.argv[2]
text = open(dockerfile).read().replace("\\\n", " ")
stage = re.split(r"(?im)^FROM\s", text)[-1]
labels = {}
for line in stage.splitlines():
    if re.match(r"(?i)^LABEL\s", line):
        for pair in shlex.split(line.split(None, 1)[1]):
            key, _, value = pair.partition("=")
            labels[key] = value

with tarfile.open(out) as t:
    files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
index = json.loads(files["index.json"])
manifest_digest = index["manifests"][0]["digest"].split(":")[1]
manifest = json.loads(files[f"blobs/sha256/{manifest_digest}"])
config_digest = manifest["config"]["digest"].split(":")[1]
config = json.loads(files[f"blobs/sha256/{config_digest}"])
config["config"]["Labels"] = labels

def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    files[f"blobs/sha256/{digest}"] = data
    return digest, len(data)

del files[f"blobs/sha256/{config_digest}"], files[f"blobs/sha256/{manifest_digest}"]
digest, size = blob(json.dumps(config, separators=(",", ":")).encode())
manifest["config"].update(digest=f"sha256:{digest}", size=size)
digest, size = blob(json.dumps(manifest, separators=(",", ":")).encode())
index["manifests"][0].update(digest=f"sha256:{digest}", size=size)
files["index.json"] = json.dumps(index, separators=(",", ":")).encode()

with tarfile.open(out + ".tmp", "w", format=tarfile.PAX_FORMAT) as t:
    for name in sorted(files):
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
        t.addfile(info, io.BytesIO(files[name]))
PY
mv "$out.tmp" "$out"
echo "build-image: $ref in $out: $(du -m --apparent-size "$out" | cut -f1) MiB ($(stat -c %s "$out") bytes)"

if [ -n "$import" ]; then
  started=$(date +%s%N)
  "$kit/image-import" "$import" "$out"
  echo "build-image: imported into $import in $(( ($(date +%s%N) - started) / 1000000 )) ms"
fi
