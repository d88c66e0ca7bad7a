#!/usr/bin/env bash
# Make a Docker engine available for the end-to-end tests, and build their offline test image.
#
#   .ci/docker.sh            install docker.io if missing (apt-get), start dockerd with the vfs
#                            storage driver if it is not running, wait for it, build the image
#   .ci/docker.sh --help
#
# Idempotent: a running engine is reused and an image already built from the same recipe is kept.
#
# Exit status (callers check it):
#   0   the engine answers and the image `netmonitor-test:latest` exists
#   75  Docker is unavailable here; the last line on stdout is "Docker unavailable: <why>"
#       (no root, no apt, dockerd would not start, ...). Nothing was left running.
#   1   anything else (a bug in this script or in the image recipe)
#
# Environment: NETMONITOR_DOCKERD_LOG (default /tmp/netmonitor-dockerd.log) receives dockerd's
# output; NETMONITOR_DOCKER_WAIT (default 60) is how many seconds to wait for the engine.
set -euo pipefail

UNAVAILABLE=75
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
dockerd_log=${NETMONITOR_DOCKERD_LOG:-/tmp/netmonitor-dockerd.log}
wait_seconds=${NETMONITOR_DOCKER_WAIT:-60}

usage() {
  sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

unavailable() {
  echo "Docker unavailable: $*"
  exit "$UNAVAILABLE"
}

engine_up() {
  timeout 10 docker info >/dev/null 2>&1
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  "") ;;
  *)
    echo "error: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

# 1. The packages.
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    unavailable "docker.io is not installed and installing it needs root"
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    unavailable "docker.io is not installed and apt-get is not available"
  fi
  echo "installing docker.io with apt-get (log: /tmp/netmonitor-docker-apt.log)"
  if ! (DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) \
    >/tmp/netmonitor-docker-apt.log 2>&1; then
    unavailable "apt-get install docker.io failed (see /tmp/netmonitor-docker-apt.log)"
  fi
fi

# 2. The engine.
if engine_up; then
  echo "docker engine: already running"
else
  if [ "$(id -u)" -ne 0 ]; then
    unavailable "the engine is not running and starting dockerd needs root"
  fi
  if pgrep -x dockerd >/dev/null 2>&1; then
    echo "docker engine: dockerd is running but not answering yet; waiting"
  else
    echo "docker engine: starting dockerd --storage-driver=vfs (log: $dockerd_log)"
    # setsid + nohup: the engine outlives this script and the CI shell that called it.
    setsid nohup dockerd --storage-driver=vfs >"$dockerd_log" 2>&1 </dev/null &
    started_pid=$!
  fi
  for _ in $(seq 1 "$wait_seconds"); do
    engine_up && break
    if [ -n "${started_pid:-}" ] && ! kill -0 "$started_pid" 2>/dev/null; then
      why=$(grep -E 'level=(fatal|error)|failed to start' "$dockerd_log" | tail -n 1 | cut -c1-300)
      unavailable "dockerd exited at start: ${why:-see $dockerd_log}"
    fi
    sleep 1
  done
  if ! engine_up; then
    if [ -n "${started_pid:-}" ]; then
      kill "$started_pid" 2>/dev/null || true
    fi
    unavailable "dockerd did not answer within ${wait_seconds}s (see $dockerd_log)"
  fi
  echo "docker engine: ready"
fi

# 3. The test image (offline: no registry is reachable).
if ! bash "$repo/tests/testdata/docker/build-image.sh"; then
  echo "error: building the test image failed" >&2
  exit 1
fi
