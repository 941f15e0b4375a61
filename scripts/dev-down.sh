#!/usr/bin/env bash
# Stops what `make up` started (PostgreSQL and RabbitMQ keep running).
set -uo pipefail
cd "$(dirname "$0")/.."
for name in worker api registry; do
    pid_file=.dev/$name.pid
    if [ -f "$pid_file" ]; then
        kill "$(cat "$pid_file")" 2>/dev/null && echo "stopped $name"
        rm -f "$pid_file"
    fi
done
