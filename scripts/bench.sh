#!/usr/bin/env bash
# Runs the benchmarks recorded in docs/benchmarks.md (real registry, PostgreSQL, RabbitMQ).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages
ensure_postgres
ensure_rabbitmq
for bench in "$@"; do :; done
cargo bench -p regindex-api --bench index
cargo bench -p regindex-api --bench icons
