#!/usr/bin/env bash
# Runs the benchmarks recorded in docs/benchmarks.md (real registry, PostgreSQL, RabbitMQ).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages
ensure_postgres
ensure_rabbitmq
cargo bench -p regindex-api --bench index
cargo bench -p regindex-api --bench icons
cargo nextest run --release -p regindex-api --test degrade outage_answer_times \
    --run-ignored ignored-only --no-capture
cargo nextest run --release -p regindex-worker --test push_latency_bench --test history_bench \
    --run-ignored ignored-only --no-capture
