#!/usr/bin/env bash
# Regenerate the example outputs in the documentation from the real binary:
# `residency-guard check` on the bundled examples (examples/cluster), as of a
# fixed instant, in English (and Chinese where a block shows both). Each
# generated block sits between markers in the Markdown:
#
#   <!-- BEGIN GENERATED <name>: scripts/render-docs.sh, do not edit -->
#   ...
#   <!-- END GENERATED <name> -->
#
#   scripts/render-docs.sh           rewrite README.md and docs/cli.md
#   scripts/render-docs.sh --check   exit 1 (and show a diff) when either is stale
#
# The binary: $RESIDENCY_GUARD_BIN, else `cargo run --locked`. The
# `kubectl apply` transcripts in the README are not generated here: they come
# from a run against a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=write
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if [ -z "${RESIDENCY_GUARD_BIN:-}" ]; then
  cargo build --quiet --locked
  RESIDENCY_GUARD_BIN=target/debug/residency-guard
fi
export RESIDENCY_GUARD_BIN

exec python3 - "$mode" <<'PY'
import difflib
import json
import os
import re
import subprocess
import sys

MODE = sys.argv[1]
BIN = os.environ["RESIDENCY_GUARD_BIN"]
# The instant every example is judged at (before the example exemption's
# expiry, 2027-06-30): the output must not depend on the day it is rendered.
NOW = "2026-11-23T00:00:00Z"
FILES = ["README.md", "docs/cli.md"]


def check(*args):
    """Run `check` with a clean environment: no RESIDENCY_GUARD_* or locale."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RESIDENCY_GUARD_") and k not in ("LC_ALL", "LC_MESSAGES")}
    env["LANG"] = "C"
    out = subprocess.run([BIN, "check", "--now", NOW, *args], env=env,
                         capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"render-docs: check {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def fenced(lang, body):
    return f"```{lang}\n{body.rstrip()}\n```"


def blocks_of(text):
    """The text report split into per-workload blocks, and the summary."""
    blocks, current, summary = [], [], []
    for line in text.rstrip("\n").split("\n"):
        if re.match(r"^(DENY |WARN |AUDIT|PASS ) ", line):
            if current:
                blocks.append(current)
            current = [line]
        elif line == "" or re.match(r"^\d+ workloads, ", line):
            if current:
                blocks.append(current)
                current = []
            if line:
                summary.append(line)
        else:
            current.append(line)
    if current:
        blocks.append(current)
    return blocks, summary


def abridged(text, keep):
    """The workloads named in `keep` (kind namespace/name), "..." for the
    others, and the summary line."""
    blocks, summary = blocks_of(text)
    out, elided = [], False
    for b in blocks:
        if any(f" {k}  " in b[0] for k in keep):
            out.extend(b)
            elided = False
        elif not elided:
            out.append("...")
            elided = True
    return "\n".join(out + [""] + summary)


def example_json():
    return json.loads(check("-f", "examples/cluster", "-o", "json"))


def violation(report, name, code):
    for r in report["results"]:
        v = r["verdict"]
        if v["workload"]["name"] != name:
            continue
        for p in v["policies"]:
            for x in p["violations"]:
                if x["code"] == code:
                    return x
    sys.exit(f"render-docs: no {code} for {name} in the example")


def gen_check_example():
    text = check("-f", "examples/cluster")
    return fenced("text", abridged(text, ["Deployment payments/api", "Deployment payments/ledger",
                                          "StatefulSet clinic/records", "StatefulSet clinic/archive"]))


def gen_check_example_zh():
    text = check("-f", "examples/cluster", "--lang", "zh-CN")
    return fenced("text", abridged(text, ["StatefulSet clinic/records", "StatefulSet clinic/archive"]))


def gen_evidence_message():
    x = violation(example_json(), "records", "EgressOutsideMainland")
    return fenced("text", x["message"]["en"] + "\n\n" + x["message"]["zh-CN"])


def gen_check_text_full():
    return fenced("text", check("-f", "examples/cluster"))


def gen_check_json_result():
    report = example_json()
    result = next(r for r in report["results"] if r["verdict"]["workload"]["name"] == "records")
    return fenced("json", json.dumps(result, indent=2, ensure_ascii=False))


def gen_check_json_summary():
    report = example_json()
    head = {k: report[k] for k in ("schemaVersion", "inputs", "summary")}
    return fenced("json", json.dumps(head, indent=2, ensure_ascii=False))


GENERATORS = {
    "check-example": gen_check_example,
    "check-example-zh": gen_check_example_zh,
    "evidence-message": gen_evidence_message,
    "check-text": gen_check_text_full,
    "check-json-result": gen_check_json_result,
    "check-json-summary": gen_check_json_summary,
}

MARKER = re.compile(
    r"(<!-- BEGIN GENERATED (?P<name>[a-z0-9-]+): scripts/render-docs\.sh, do not edit -->\n)"
    r"(?P<body>.*?)"
    r"(\n<!-- END GENERATED (?P=name) -->)",
    re.S,
)

stale = False
seen = set()
for path in FILES:
    with open(path, encoding="utf-8") as f:
        old = f.read()

    def replace(m):
        name = m.group("name")
        gen = GENERATORS.get(name)
        if gen is None:
            sys.exit(f"render-docs: {path}: unknown block {name!r}")
        seen.add(name)
        return m.group(1) + gen() + m.group(4)

    new = MARKER.sub(replace, old)
    if new == old:
        continue
    if MODE == "check":
        stale = True
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(True), new.splitlines(True), path, path + " (regenerated)"))
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        print(f"render-docs: wrote {path}")

missing = set(GENERATORS) - seen
if missing:
    sys.exit(f"render-docs: no marker for {sorted(missing)} in {FILES}")
if stale:
    print("render-docs: the generated blocks are stale; run scripts/render-docs.sh", file=sys.stderr)
    sys.exit(1)
PY
