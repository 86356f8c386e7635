#!/usr/bin/env bash
# Start a local Prometheus stack for Gangplank, without Docker:
#   Prometheus (with examples/prometheus/alerts.yml), Pushgateway, Alertmanager
#   and the OpenTelemetry Collector built from otel-collector/ (if Go is installed).
#
# Usage:  bash examples/stack/start.sh        then   bash examples/stack/stop.sh
#
# Binaries: Debian's prometheus, prometheus-pushgateway and prometheus-alertmanager
# packages (apt-get install prometheus prometheus-pushgateway prometheus-alertmanager),
# or the upstream binaries on PATH. Everything listens on 127.0.0.1 only.
#
# Environment (defaults in brackets):
#   PROMETHEUS_PORT [9090]  PUSHGATEWAY_PORT [9091]  ALERTMANAGER_PORT [9093]
#   SERVING_PORT [9464]     the serving process Prometheus scrapes (gangplank.ScrapeEndpoint)
#   OTLP_HTTP_PORT [4318]   OTLP_GRPC_PORT [4317]   COLLECTOR_PROMETHEUS_PORT [8889]
#   COLLECTOR_HEALTH_PORT [13133]  COLLECTOR_TELEMETRY_PORT [8888]
#   GANGPLANK_STACK_DIR     state: data, logs, pid files, generated configs
#                           [${TMPDIR:-/tmp}/gangplank-stack-<uid>]
#   GANGPLANK_STACK_COLLECTOR  set to 0 to leave the Collector out [1]
#   SCRAPE_INTERVAL [15s]   Prometheus's scrape and rule evaluation interval
#   STACK_START_TIMEOUT     seconds to wait for each service [60; the first Collector
#                           build takes minutes and is not counted]
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd -- "${here}/../.." && pwd -P)"
examples="${repo}/examples/prometheus"

PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
PUSHGATEWAY_PORT="${PUSHGATEWAY_PORT:-9091}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9093}"
SERVING_PORT="${SERVING_PORT:-9464}"
OTLP_HTTP_PORT="${OTLP_HTTP_PORT:-4318}"
OTLP_GRPC_PORT="${OTLP_GRPC_PORT:-4317}"
COLLECTOR_PROMETHEUS_PORT="${COLLECTOR_PROMETHEUS_PORT:-8889}"
COLLECTOR_HEALTH_PORT="${COLLECTOR_HEALTH_PORT:-13133}"
COLLECTOR_TELEMETRY_PORT="${COLLECTOR_TELEMETRY_PORT:-8888}"
GANGPLANK_STACK_COLLECTOR="${GANGPLANK_STACK_COLLECTOR:-1}"
STACK_START_TIMEOUT="${STACK_START_TIMEOUT:-60}"
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-15s}"
state="${GANGPLANK_STACK_DIR:-${TMPDIR:-/tmp}/gangplank-stack-$(id -u)}"

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for port in PROMETHEUS_PORT PUSHGATEWAY_PORT ALERTMANAGER_PORT SERVING_PORT OTLP_HTTP_PORT \
    OTLP_GRPC_PORT COLLECTOR_PROMETHEUS_PORT COLLECTOR_HEALTH_PORT COLLECTOR_TELEMETRY_PORT; do
    [[ "${!port}" =~ ^[0-9]+$ ]] || die "${port} must be a port number, got '${!port}'"
done
[[ "${SCRAPE_INTERVAL}" =~ ^[0-9]+(ms|s|m|h)$ ]] || die "SCRAPE_INTERVAL must be a duration like 15s"

find_binary() {  # find_binary NAME... : the first one on PATH
    local name
    for name in "$@"; do
        if command -v "${name}" >/dev/null 2>&1; then
            command -v "${name}"
            return 0
        fi
    done
    return 1
}

port_in_use() {  # port_in_use PORT : something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

answers() {  # answers URL : HTTP 2xx
    curl --silent --fail --max-time 2 --output /dev/null "$1"
}

mkdir -p -- "${state}"
state="$(cd -- "${state}" && pwd -P)"
started=()

stop_started() {
    local name
    for name in "${started[@]}"; do
        GANGPLANK_STACK_DIR="${state}" bash "${here}/stop.sh" "${name}" >&2 || true
    done
}

# start NAME READY_URL PORT COMMAND... : run COMMAND in the background (its own session,
# output to NAME.log, pid to NAME.pid) and wait until READY_URL answers.
start() {
    local name="$1" ready="$2" port="$3"
    shift 3
    local pidfile="${state}/${name}.pid" logfile="${state}/${name}.log"
    if [[ -f "${pidfile}" ]] && kill -0 "$(cat -- "${pidfile}")" 2>/dev/null; then
        die "${name} is already running (pid $(cat -- "${pidfile}")); run examples/stack/stop.sh first"
    fi
    if port_in_use "${port}"; then
        stop_started
        die "port ${port} for ${name} is already in use; set another port (see the header of $0)"
    fi
    setsid "$@" </dev/null >>"${logfile}" 2>&1 &
    local pid=$!
    printf '%s\n' "${pid}" >"${pidfile}"
    started+=("${name}")
    local deadline=$((SECONDS + STACK_START_TIMEOUT))
    until answers "${ready}"; do
        if ! kill -0 "${pid}" 2>/dev/null; then
            tail -n 20 -- "${logfile}" >&2 || true
            stop_started
            die "${name} exited during start-up (log: ${logfile})"
        fi
        if ((SECONDS > deadline)); then
            tail -n 20 -- "${logfile}" >&2 || true
            stop_started
            die "${name} did not answer ${ready} within ${STACK_START_TIMEOUT}s (log: ${logfile})"
        fi
        sleep 0.2
    done
    log "${name} ready (pid ${pid}): ${ready%/-/*}"
}

prometheus="$(find_binary prometheus)" || die "prometheus not found: apt-get install prometheus"
pushgateway="$(find_binary prometheus-pushgateway pushgateway)" \
    || die "the Pushgateway was not found: apt-get install prometheus-pushgateway"
alertmanager="$(find_binary prometheus-alertmanager alertmanager)" \
    || die "Alertmanager was not found: apt-get install prometheus-alertmanager"
command -v curl >/dev/null 2>&1 || die "curl is needed to check the services"

# Prometheus configuration: the example, with this stack's ports and absolute rule paths.
sed -e "s|localhost:9091|127.0.0.1:${PUSHGATEWAY_PORT}|" \
    -e "s|localhost:9464|127.0.0.1:${SERVING_PORT}|" \
    -e "s|localhost:8889|127.0.0.1:${COLLECTOR_PROMETHEUS_PORT}|" \
    -e "s|localhost:9093|127.0.0.1:${ALERTMANAGER_PORT}|" \
    -e "s|localhost:9090|127.0.0.1:${PROMETHEUS_PORT}|" \
    -e "s|^  - alerts.yml$|  - ${examples}/alerts.yml|" \
    -e "s|^  scrape_interval: 15s$|  scrape_interval: ${SCRAPE_INTERVAL}|" \
    -e "s|^  evaluation_interval: 15s$|  evaluation_interval: ${SCRAPE_INTERVAL}|" \
    "${examples}/prometheus.yml" >"${state}/prometheus.yml"
"$(dirname -- "${prometheus}")/promtool" check config "${state}/prometheus.yml" >/dev/null 2>&1 \
    || log "warning: promtool check config ${state}/prometheus.yml failed"

log "state, logs and pid files in ${state}"

start pushgateway "http://127.0.0.1:${PUSHGATEWAY_PORT}/-/ready" "${PUSHGATEWAY_PORT}" \
    "${pushgateway}" \
    "--web.listen-address=127.0.0.1:${PUSHGATEWAY_PORT}" \
    "--web.enable-admin-api" \
    "--persistence.file=${state}/pushgateway.data"

start alertmanager "http://127.0.0.1:${ALERTMANAGER_PORT}/-/ready" "${ALERTMANAGER_PORT}" \
    "${alertmanager}" \
    "--config.file=${examples}/alertmanager.yml" \
    "--storage.path=${state}/alertmanager-data" \
    "--web.listen-address=127.0.0.1:${ALERTMANAGER_PORT}" \
    "--cluster.listen-address="

start prometheus "http://127.0.0.1:${PROMETHEUS_PORT}/-/ready" "${PROMETHEUS_PORT}" \
    "${prometheus}" \
    "--config.file=${state}/prometheus.yml" \
    "--storage.tsdb.path=${state}/prometheus-data" \
    "--web.listen-address=127.0.0.1:${PROMETHEUS_PORT}" \
    "--web.enable-lifecycle" \
    "--web.enable-remote-write-receiver"

if [[ "${GANGPLANK_STACK_COLLECTOR}" == "0" ]]; then
    log "Collector left out (GANGPLANK_STACK_COLLECTOR=0)"
else
    status=0
    collector="$(bash "${repo}/otel-collector/build.sh")" || status=$?
    if ((status == 3)); then
        log "Collector skipped: Go is not installed (see otel-collector/README.md)"
    elif ((status != 0)); then
        stop_started
        die "building the Collector failed (bash otel-collector/build.sh)"
    else
        # Prometheus scrapes the Collector's prometheus exporter; the overlay switches the
        # remote-write pipeline off, or every series would arrive twice.
        for port in "${OTLP_GRPC_PORT}" "${COLLECTOR_PROMETHEUS_PORT}" \
            "${COLLECTOR_HEALTH_PORT}" "${COLLECTOR_TELEMETRY_PORT}"; do
            if port_in_use "${port}"; then
                stop_started
                die "port ${port} for the collector is already in use; set another port"
            fi
        done
        start collector "http://127.0.0.1:${COLLECTOR_HEALTH_PORT}/" "${OTLP_HTTP_PORT}" \
            env \
            "OTLP_HTTP_ENDPOINT=127.0.0.1:${OTLP_HTTP_PORT}" \
            "OTLP_GRPC_ENDPOINT=127.0.0.1:${OTLP_GRPC_PORT}" \
            "PROM_EXPORTER_ENDPOINT=127.0.0.1:${COLLECTOR_PROMETHEUS_PORT}" \
            "PROM_REMOTE_WRITE_URL=http://127.0.0.1:${PROMETHEUS_PORT}/api/v1/write" \
            "HEALTH_CHECK_ENDPOINT=127.0.0.1:${COLLECTOR_HEALTH_PORT}" \
            "COLLECTOR_TELEMETRY_PORT=${COLLECTOR_TELEMETRY_PORT}" \
            "${collector}" \
            --config "${repo}/otel-collector/config.yaml" \
            --config "${here}/collector-no-remote-write.yaml"
    fi
fi

cat <<EOF
Gangplank stack running (stop it with: bash examples/stack/stop.sh)
  Prometheus    http://127.0.0.1:${PROMETHEUS_PORT}
  Pushgateway   http://127.0.0.1:${PUSHGATEWAY_PORT}      gangplank.PushgatewayReader("http://127.0.0.1:${PUSHGATEWAY_PORT}", job=...)
  Alertmanager  http://127.0.0.1:${ALERTMANAGER_PORT}
  serving       Prometheus scrapes http://127.0.0.1:${SERVING_PORT}/metrics (gangplank.ScrapeEndpoint(port=${SERVING_PORT}))
EOF
if [[ -f "${state}/collector.pid" ]] && kill -0 "$(cat -- "${state}/collector.pid")" 2>/dev/null; then
    cat <<EOF
  Collector     OTLP http://127.0.0.1:${OTLP_HTTP_PORT} (gangplank.otlp_reader("http://127.0.0.1:${OTLP_HTTP_PORT}"))
EOF
fi
