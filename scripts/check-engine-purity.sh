#!/usr/bin/env bash
# The engine is the one pure decision: no I/O, no clock, no kube client, no
# async runtime. A module boundary is only a boundary if something checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='kube::(Client|runtime|Api\b|api::Api)|kube_runtime|tokio|std::fs|std::io::(stdin|stdout|Read|Write)|std::net::(Tcp|Udp)|std::process|std::env|std::thread|SystemTime|Instant::now|Timestamp::now|Zoned::now|Utc::now|reqwest|hyper|axum|println!|eprintln!'
if hits=$(grep -rnE "$forbidden" src/engine/ | grep -vE '^\S+:\s*//'); then
  echo "engine purity check FAILED: src/engine/ must not do I/O, read the clock or talk to Kubernetes:" >&2
  echo "$hits" >&2
  exit 1
fi
echo "engine purity check: src/engine/ is pure"
