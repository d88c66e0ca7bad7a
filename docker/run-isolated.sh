#!/usr/bin/env bash
# Run the same container with no network at all (`docker run --network none`).
set -euo pipefail

# shellcheck source=docker/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'USAGE'
Usage: docker/run-isolated.sh [OPTIONS] [IMAGE] [COMMAND...]

Runs IMAGE with no network at all (`docker run --network none`): nothing inside can reach
the host, other containers or the internet, so no proxy is needed.

USAGE
  nm_common_help
}

image=${NETMONITOR_IMAGE:-debian:bookworm-slim}
image_set=0
name=""
pull=${NETMONITOR_PULL:-missing}
nm_split_words docker_args "${NETMONITOR_DOCKER_ARGS:-}"

while [ $# -gt 0 ]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    -i | --image)
      [ $# -ge 2 ] || nm_usage_error "$1 needs a value"
      image=$2 image_set=1
      shift 2
      ;;
    --image=*) image=${1#*=} image_set=1 && shift ;;
    -d | --docker-arg)
      [ $# -ge 2 ] || nm_usage_error "$1 needs a value"
      docker_args+=("$2")
      shift 2
      ;;
    --docker-arg=*) docker_args+=("${1#*=}") && shift ;;
    --name)
      [ $# -ge 2 ] || nm_usage_error "$1 needs a value"
      name=$2
      shift 2
      ;;
    --name=*) name=${1#*=} && shift ;;
    --pull)
      [ $# -ge 2 ] || nm_usage_error "$1 needs a value"
      pull=$2
      shift 2
      ;;
    --pull=*) pull=${1#*=} && shift ;;
    --)
      shift
      break
      ;;
    -*) nm_usage_error "unknown option '$1'" ;;
    *) break ;;
  esac
done
if [ $# -gt 0 ] && [ "$image_set" = 0 ]; then
  image=$1
  shift
fi
[ -n "$image" ] || nm_usage_error "no image given"
nm_check_pull "$pull"
[ -n "$name" ] || name="netmonitor-isolated-$(date +%s)-$$"

nm_require_docker
tty_args=(-i)
if [ -t 0 ] && [ -t 1 ]; then
  tty_args=(-it)
fi
nm_info "container $name with no network (--network none)"
status=0
docker run --rm --pull "$pull" "${tty_args[@]}" --name "$name" --network none \
  "${docker_args[@]}" "$image" "$@" || status=$?
exit "$status"
