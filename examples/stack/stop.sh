#!/usr/bin/env bash
# Stop the services started by examples/stack/start.sh.
#
# Usage:  bash examples/stack/stop.sh [--purge] [SERVICE...]
#   SERVICE  prometheus, pushgateway, alertmanager, collector (default: all)
#   --purge  also delete the state directory (data, logs, generated configs)
#
# Environment: GANGPLANK_STACK_DIR, as for start.sh. Each service gets SIGTERM, then SIGKILL
# if it is still running after STACK_STOP_TIMEOUT seconds [10].
set -euo pipefail

state="${GANGPLANK_STACK_DIR:-${TMPDIR:-/tmp}/gangplank-stack-$(id -u)}"
STACK_STOP_TIMEOUT="${STACK_STOP_TIMEOUT:-10}"

log() { printf 'stack: %s\n' "$*" >&2; }

purge=0
services=()
for arg in "$@"; do
    case "${arg}" in
        --purge) purge=1 ;;
        prometheus | pushgateway | alertmanager | collector) services+=("${arg}") ;;
        *) log "error: unknown argument '${arg}'"; exit 2 ;;
    esac
done
((${#services[@]})) || services=(collector prometheus alertmanager pushgateway)

# The program each pid file must belong to (guards against a reused pid).
expected() {
    case "$1" in
        prometheus) echo prometheus ;;
        pushgateway) echo pushgateway ;;
        alertmanager) echo alertmanager ;;
        collector) echo otelcol ;;
    esac
}

alive() {  # alive PID : running (a zombie nobody has reaped yet counts as stopped)
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    # No /proc entry: either no /proc here (trust kill -0), or reaped since (kill -0 fails).
    stat="$(cat -- "/proc/$1/stat" 2>/dev/null)" || { kill -0 "$1" 2>/dev/null; return; }
    stat="${stat##*) }"
    [[ "${stat:0:1}" != "Z" ]]
}

ours() {  # ours PID NAME : the process is alive and runs the expected program
    local cmdline
    alive "$1" || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || ps -o args= -p "$1" || true)"
    [[ "${cmdline}" == *"$(expected "$2")"* ]]
}

status=0
for name in "${services[@]}"; do
    pidfile="${state}/${name}.pid"
    [[ -f "${pidfile}" ]] || continue
    pid="$(cat -- "${pidfile}")"
    if ! [[ "${pid}" =~ ^[0-9]+$ ]] || ! ours "${pid}" "${name}"; then
        log "${name} was not running"
        rm -f -- "${pidfile}"
        continue
    fi
    kill -TERM "${pid}" 2>/dev/null || true
    deadline=$((SECONDS + STACK_STOP_TIMEOUT))
    while alive "${pid}" && ((SECONDS <= deadline)); do
        sleep 0.1
    done
    if alive "${pid}"; then
        log "${name} (pid ${pid}) ignored SIGTERM; killing it"
        kill -KILL "${pid}" 2>/dev/null || true
        sleep 0.1
    fi
    if alive "${pid}"; then
        log "error: could not stop ${name} (pid ${pid})"
        status=1
        continue
    fi
    rm -f -- "${pidfile}"
    log "${name} stopped (pid ${pid})"
done

if ((purge)) && ((status == 0)); then
    if compgen -G "${state}/*.pid" >/dev/null; then
        log "not purging ${state}: some services are still recorded as running"
    else
        rm -rf -- "${state}"
        log "removed ${state}"
    fi
fi
exit "${status}"
