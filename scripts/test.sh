#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL, RabbitMQ and docker-registry
# processes, installing and starting them first when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
ensure_postgres
ensure_rabbitmq

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
