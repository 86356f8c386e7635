#!/usr/bin/env bash
# Build Gangplank's OpenTelemetry Collector from otel-collector/manifest.yaml
# with the official OpenTelemetry Collector Builder (ocb).
#
# Usage: bash otel-collector/build.sh
#
# * stdout: ONLY the absolute path of the collector binary (last line).
#   Everything else (progress, builder and go output) goes to stderr.
# * The binary is built into a cache directory outside the repository:
#     ${GANGPLANK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gangplank}/otelcol-<sha256>
#   where <sha256> covers the manifest, the builder version and the Go
#   toolchain/platform. An existing binary for the same hash is reused.
# * The builder itself is cached in the same cache directory; Go modules go to
#   the default GOPATH/GOMODCACHE (override with the usual Go variables).
# * Exit status 3: no Go toolchain (neither `go` on PATH nor /usr/local/go/bin/go).
set -euo pipefail

BUILDER_VERSION="v0.165.0"
BUILDER_MODULE="go.opentelemetry.io/collector/cmd/builder"

log() { printf 'otel-collector/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
manifest="${script_dir}/manifest.yaml"
[[ -f "${manifest}" ]] || die "manifest not found: ${manifest}"

# --- locate Go -------------------------------------------------------------
if command -v go >/dev/null 2>&1; then
    GO="$(command -v go)"
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    log "error: the Go toolchain was not found (neither 'go' on PATH nor /usr/local/go/bin/go)."
    log "Install Go >= 1.26 to build the OpenTelemetry Collector."
    exit 3
fi
# The builder runs `go` itself: make sure it finds the same toolchain.
export PATH="$(dirname -- "${GO}"):${PATH}"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--mod=mod}"

# --- cache locations -------------------------------------------------------
cache_root="${GANGPLANK_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/gangplank}"
mkdir -p -- "${cache_root}"
cache_root="$(cd -- "${cache_root}" && pwd -P)"

go_id="$("${GO}" env GOVERSION GOOS GOARCH | tr '\n' ' ')"
hash="$(
    {
        printf 'builder=%s\ngo=%s\ncgo=%s\n' "${BUILDER_VERSION}" "${go_id}" "${CGO_ENABLED}"
        cat -- "${manifest}"
    } | sha256sum | cut -d' ' -f1
)"

# Binary name = dist.name from the manifest.
dist_name="$(awk '
    /^dist:/ { in_dist = 1; next }
    /^[^[:space:]#]/ { in_dist = 0 }
    in_dist && $1 == "name:" { print $2; exit }
' "${manifest}")"
dist_name="${dist_name:-otelcol-gangplank}"

out_dir="${cache_root}/otelcol-${hash}"
binary="${out_dir}/${dist_name}"

if [[ -x "${binary}" ]]; then
    log "using cached collector ${binary}"
    printf '%s\n' "${binary}"
    exit 0
fi

# Serialise concurrent builds (e.g. parallel test workers) when flock exists.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${cache_root}/.build.lock"
    log "waiting for build lock ${cache_root}/.build.lock"
    flock 9
    if [[ -x "${binary}" ]]; then
        log "using collector built concurrently: ${binary}"
        printf '%s\n' "${binary}"
        exit 0
    fi
fi

# --- builder (ocb) ---------------------------------------------------------
builder_dir="${cache_root}/ocb-${BUILDER_VERSION}-$("${GO}" env GOVERSION)"
builder="${builder_dir}/builder"
if [[ ! -x "${builder}" ]]; then
    log "installing ${BUILDER_MODULE}@${BUILDER_VERSION} into ${builder_dir}"
    mkdir -p -- "${builder_dir}"
    GOBIN="${builder_dir}" "${GO}" install "${BUILDER_MODULE}@${BUILDER_VERSION}" >&2 \
        || die "could not install the collector builder"
fi

# --- build -----------------------------------------------------------------
work_dir="${out_dir}.tmp.$$"
rm -rf -- "${work_dir}"
cleanup() { rm -rf -- "${work_dir}"; }
trap cleanup EXIT

log "building collector (manifest hash ${hash:0:12}); this can take several minutes"
start=${SECONDS}
# --output-path is deprecated in favour of dist.output_path, but it keeps the
# committed manifest free of machine-specific paths.
if ! "${builder}" --config "${manifest}" --output-path "${work_dir}" >&2; then
    die "collector build failed (see the builder output above)"
fi
[[ -x "${work_dir}/${dist_name}" ]] || die "builder finished but ${work_dir}/${dist_name} is missing"
log "built in $((SECONDS - start))s"

rm -rf -- "${out_dir}"
mv -- "${work_dir}" "${out_dir}"
trap - EXIT

printf '%s\n' "${binary}"
