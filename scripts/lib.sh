# Shared helpers for the dev and test scripts: install what regindex needs from Debian's
# packages and start PostgreSQL and RabbitMQ when they are not running. Idempotent.

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
    local missing=()
    command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
    command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    # Real clients the tests drive: Flatpak (remote-ls against the index) and Chromium
    # (the web page), plus openssl (the token server of the auth tests signs with it).
    command -v flatpak >/dev/null 2>&1 || missing+=(flatpak)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # The broker, and rabbitmqctl that the bus tests use to import definitions and to
    # close connections (tests run as root, which rabbitmqctl accepts).
    command -v rabbitmqctl >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmqctl ] || missing+=(rabbitmq-server)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 name=$2 i
    for i in $(seq 1 60); do
        port_open "$port" && return 0
        sleep 1
    done
    log "$name did not open port $port"
    return 1
}

ensure_postgres() {
    if ! port_open 5432; then
        log "starting PostgreSQL"
        if command -v pg_ctlcluster >/dev/null 2>&1; then
            as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | tail -n 1)" main start
        else
            log "PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster is missing"
            return 1
        fi
    fi
    wait_port 5432 PostgreSQL
}

ensure_rabbitmq() {
    if ! port_open 5672; then
        log "starting RabbitMQ"
        as_root rabbitmq-server -detached
    fi
    wait_port 5672 RabbitMQ
}

# Creates database $1 on the local server when it does not exist yet.
ensure_database() {
    local db=$1
    if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
        log "creating database $db"
        psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$db\""
    fi
}
