#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them on JAX and the
# cross-backend subset on TensorFlow. Servers are started by the test fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python3}"

missing=()
for bin in prometheus prometheus-pushgateway prometheus-alertmanager; do
    command -v "$bin" >/dev/null || missing+=("$bin")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing ${missing[*]}: run as root or apt-get install them" >&2
        exit 1
    fi
    echo "--- installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        prometheus prometheus-pushgateway prometheus-alertmanager >/dev/null
fi

echo "--- installing gangplank with its test extras" >&2
"$PYTHON" -m pip install -q -e ".[dev,jax,tensorflow]"

echo "--- building the OpenTelemetry Collector (cached outside the repo)" >&2
if GANGPLANK_OTELCOL="$(bash otel-collector/build.sh)"; then
    export GANGPLANK_OTELCOL
elif [[ "${CI:-}" == "true" ]]; then
    echo "the Collector could not be built; CI requires it" >&2
    exit 1
fi

run_pytest() {
    local status=0
    "$PYTHON" -m pytest "$@" || status=$?
    if [[ $status -eq 5 ]]; then
        echo "pytest collected no tests: that is a failure" >&2
        return 1
    fi
    return $status
}

echo "--- tests on JAX" >&2
KERAS_BACKEND=jax run_pytest -p no:cacheprovider -q "$@"
echo "--- cross-backend subset on TensorFlow" >&2
KERAS_BACKEND=tensorflow run_pytest -p no:cacheprovider -q -m crossbackend
