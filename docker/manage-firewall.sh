#!/usr/bin/env bash
# Manage netmonitor's rules and view its statistics (the original design's manage-firewall.sh).
set -euo pipefail

# shellcheck source=docker/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'USAGE'
Usage: docker/manage-firewall.sh [ARGS...]            interactive menu (netmonitor manage)
       docker/manage-firewall.sh --stats [ARGS...]    statistics only (netmonitor stats)
       docker/manage-firewall.sh --prompt [ARGS...]   answer the running proxy's prompts
                                                      (netmonitor prompt)
       docker/manage-firewall.sh --status [ARGS...]   is a proxy running, where does it listen,
                                                      who answers its prompts (netmonitor
                                                      status; exit 3: none)

ARGS are passed to the netmonitor command unchanged (see `netmonitor <command> --help`).

Environment: NETMONITOR_DATA_DIR (default ~/docker-agent-data; refused when it is someone
else's or others can write to it), NETMONITOR_BIN (the netmonitor command; default:
`netmonitor` on PATH, else `deno run -A main.ts`, else `npx -y deno@2.9.6 run -A main.ts`).
USAGE
}

command=manage
case ${1:-} in
  -h | --help)
    usage
    exit 0
    ;;
  --stats)
    command=stats
    shift
    ;;
  --prompt)
    command=prompt
    shift
    ;;
  --status)
    command=status
    shift
    ;;
  --data-dir | --data-dir=*) ;;
  -*)
    # `netmonitor manage` takes no options: a typo such as --stat must not be blamed on it.
    nm_usage_error "unknown option '$1' (expected --stats, --prompt, --status or --help first)"
    ;;
esac

nm_resolve_cmd
# A data dir others can write to could hold their rules, or their socket posing as the proxy's.
data_dir=$(nm_data_dir)
[ ! -e "$data_dir" ] || nm_private_dir "$data_dir"
status=0
nm_netmonitor "$command" "$@" || status=$?
exit "$status"
