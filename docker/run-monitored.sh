#!/usr/bin/env bash
# Run a Docker container whose only way out is the netmonitor proxy on the host.
set -euo pipefail

# shellcheck source=docker/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
# shellcheck source=docker/_firewall.sh
. "$(dirname "${BASH_SOURCE[0]}")/_firewall.sh"

usage() {
  cat <<'EOF'
Usage: docker/run-monitored.sh [OPTIONS] [IMAGE] [COMMAND...]

Runs IMAGE (COMMAND, or else the image's own command, usually a shell) on an internal Docker
network whose only way out is the netmonitor proxy on the host:
  - makes sure a proxy listens on the network's gateway: reuses the data dir's own running
    netmonitor (anything else on that port is refused, a netmonitor of another data dir too),
    or starts `netmonitor run --listen GATEWAY --port PORT --prompt-via socket` in the
    background (output in DATA_DIR/netmonitor-proxy-GATEWAY-PORT.out) and stops it again
    when the last container that uses it exits;
  - the network is created with `docker network create --internal` and with inter-container
    communication off (com.docker.network.bridge.enable_icc=false), so its containers reach
    neither the outside nor each other; on the host, only the proxy port of the gateway is
    open to it (iptables: needs root or sudo -n, and the script refuses to run the container
    when the rules cannot be added). While the container runs, the rules are checked every
    second: rules a firewall reload or flush took away are written again (with a warning), and
    when that fails the container is stopped. One network serves one data dir: a network that
    another data dir's runs created or use, or on which containers reach each other, is refused;
  - sets HTTP_PROXY, HTTPS_PROXY, http_proxy, https_proxy, NO_PROXY and no_proxy;
  - mounts the netmonitor CA read-only and makes it trusted: SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
    CURL_CA_BUNDLE, PIP_CERT, GIT_SSL_CAINFO (the image's CA bundle plus the netmonitor CA,
    at /etc/netmonitor/ca-bundle.pem), NODE_EXTRA_CA_CERTS (/etc/netmonitor/ca.crt), and the
    system store, when the image has one (that bundle mounted over it).

Answer the proxy's prompts in another terminal with `netmonitor prompt`
(or ./docker/manage-firewall.sh --prompt).

Options (flags win over environment variables):
  -p, --port PORT        proxy port on the gateway (env NETMONITOR_PORT, default 8080)
      --network NAME     internal Docker network to use or create
                         (env NETMONITOR_NETWORK, default netmonitor)
      --proxy-arg ARG    extra argument for `netmonitor run` when this script starts the
                         proxy, repeatable (env NETMONITOR_RUN_ARGS, split on spaces),
                         e.g. --proxy-arg=--prompt-timeout=120
      --keep-proxy       leave a proxy this script started running after the container
                         exits (env NETMONITOR_KEEP_PROXY=1)
      --no-host-firewall do not add the iptables rules that close the host's other ports
                         to the network (env NETMONITOR_HOST_FIREWALL=0): the container then
                         reaches every host service that listens on all addresses
      --no-system-ca     do not mount the CA bundle over the image's system store
EOF
  nm_common_help
  cat <<'EOF'

Environment: NETMONITOR_DATA_DIR (default ~/docker-agent-data; it must be yours alone: made
0700, and refused when it is someone else's or others can write to it), NETMONITOR_BIN (the
netmonitor command; default: `netmonitor` on PATH, else `deno run -A main.ts`, else
`npx -y deno@2.9.6 run -A main.ts`), NETMONITOR_START_TIMEOUT (seconds to wait for a proxy
this script starts, default 60).
EOF
}

port=${NETMONITOR_PORT:-8080}
image=${NETMONITOR_IMAGE:-debian:bookworm-slim}
image_set=0
network=${NETMONITOR_NETWORK:-netmonitor}
nm_flag keep_proxy NETMONITOR_KEEP_PROXY "${NETMONITOR_KEEP_PROXY:-0}"
nm_flag host_firewall NETMONITOR_HOST_FIREWALL "${NETMONITOR_HOST_FIREWALL:-1}"
system_ca=1
name=""
pull=${NETMONITOR_PULL:-missing}
nm_split_words docker_args "${NETMONITOR_DOCKER_ARGS:-}"
nm_split_words run_args "${NETMONITOR_RUN_ARGS:-}"

need_value() {
  [ "$2" -ge 2 ] || nm_usage_error "$1 needs a value"
}
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    -p | --port) need_value "$1" $# && port=$2 && shift 2 ;;
    --port=*) port=${1#*=} && shift ;;
    -i | --image) need_value "$1" $# && image=$2 && image_set=1 && shift 2 ;;
    --image=*) image=${1#*=} && image_set=1 && shift ;;
    -d | --docker-arg) need_value "$1" $# && docker_args+=("$2") && shift 2 ;;
    --docker-arg=*) docker_args+=("${1#*=}") && shift ;;
    --proxy-arg) need_value "$1" $# && run_args+=("$2") && shift 2 ;;
    --proxy-arg=*) run_args+=("${1#*=}") && shift ;;
    --network) need_value "$1" $# && network=$2 && shift 2 ;;
    --network=*) network=${1#*=} && shift ;;
    --name) need_value "$1" $# && name=$2 && shift 2 ;;
    --name=*) name=${1#*=} && shift ;;
    --pull) need_value "$1" $# && pull=$2 && shift 2 ;;
    --pull=*) pull=${1#*=} && shift ;;
    --keep-proxy) keep_proxy=1 && shift ;;
    --no-host-firewall) host_firewall=0 && shift ;;
    --no-system-ca) system_ca=0 && shift ;;
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
command_args=("$@")
case $port in
  '' | *[!0-9]*) nm_usage_error "invalid port '$port' (expected 1-65535)" ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
  nm_usage_error "invalid port '$port' (expected 1-65535)"
fi
[ -n "$image" ] || nm_usage_error "no image given"
nm_check_pull "$pull"
[ -n "$name" ] || name="netmonitor-$(date +%s)-$$"

nm_require_docker
# The image before the network, the firewall and the proxy. Pulled here, once and visibly (the
# CA probe below would pull it silently, and `docker run` again with --pull always).
nm_ensure_image "$image" "$pull"
pull=missing
nm_resolve_cmd
data_dir=$(nm_data_dir)
nm_private_dir "$data_dir"
# netmonitor's own check of the data dir (symlinks on the way included) before this script
# writes anything in it: `status` refuses an unsafe one with exit 1 and says why.
status_code=0
status_out=$(nm_netmonitor status --json 2>&1 >/dev/null) || status_code=$?
if [ "$status_code" = 1 ]; then
  case $status_out in
    *"error: "*) nm_die "${status_out#*error: }" ;;
    *) nm_die "netmonitor status failed: ${status_out:-no output}" ;;
  esac
fi
# The data dir as labels name it (label netmonitor.data-dir): absolute, symlinks resolved.
data_dir_abs=$(CDPATH='' cd -P -- "$data_dir" && pwd -P) || nm_die "cannot read the data dir $data_dir"
# One file per running script, named by its pid and holding its network's id and its start
# time: a run that is still preparing its container counts as a user of the network and the
# proxy.
runs_dir="$data_dir/netmonitor-runs"
# Never a symlink: runs remove the stale files they find in there.
[ ! -L "$runs_dir" ] || rm -f -- "$runs_dir"
lock_file="$data_dir/netmonitor-run.lock"

# What this run created, for the cleanup.
reused_proxy=0
foreign_listener=0
started_proxy_pid=""
started_proxy_start=""
tmp_dir=""
bridge=""
gateway=""
network_id=""
pid_file=""
run_file=""
probe=""

# Runs of one data dir take turns where they share state (the network, its firewall rules,
# the proxy and its pid file): from creating the network until the proxy listens, and in the
# cleanup, and while a firewall watcher restores the rules. Polled (flock -n, which BusyBox has
# too), so that a signal is handled at once. Returns 1 after 300 s, or after $1 tries (0.2 s
# apart, quietly).
lock_fd=""
take_lock() {
  local max=${1:-1500}
  [ -z "$lock_fd" ] || return 0
  # Never a symlink: the lock file is opened (and created) through it.
  [ ! -L "$lock_file" ] || rm -f -- "$lock_file"
  exec {lock_fd}>>"$lock_file" || nm_die "cannot open the lock file $lock_file"
  if ! command -v flock >/dev/null 2>&1; then
    nm_warn "flock is not installed (util-linux): concurrent runs are not kept apart"
    return 0
  fi
  local tries=0
  until flock -n "$lock_fd"; do
    [ "$tries" != 5 ] || [ -n "${1:-}" ] || nm_info "waiting for another run of $data_dir to finish setting up"
    [ "$tries" -lt "$max" ] || return 1
    tries=$((tries + 1))
    sleep 0.2
  done
}
# shellcheck disable=SC2317  # called from the trap
release_lock() {
  [ -n "$lock_fd" ] || return 0
  flock -u "$lock_fd" 2>/dev/null || true
  exec {lock_fd}>&-
  lock_fd=""
}

# The start time of process $1 (field 22 of /proc/PID/stat), or nothing without /proc.
# shellcheck disable=SC2317  # called from the trap
proc_start() {
  local stat fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  read -r -a fields <<<"${stat##*) }"
  printf '%s\n' "${fields[19]:-}"
}

# How many other runs of this data dir use this run's network.
# shellcheck disable=SC2317  # called from the trap
other_runs() {
  local file pid id start n=0
  for file in "$runs_dir"/*; do
    [ -f "$file" ] || continue
    pid=${file##*/}
    [[ $pid =~ ^[0-9]+$ ]] || continue
    [ "$pid" != "$$" ] || continue
    read -r id start <"$file" 2>/dev/null || true
    # Gone, or the pid now belongs to another process: a run killed without its cleanup.
    if ! kill -0 "$pid" 2>/dev/null || [ "$(proc_start "$pid")" != "${start:-}" ]; then
      rm -f "$file"
      continue
    fi
    [ "${id:-}" != "$network_id" ] || n=$((n + 1))
  done
  printf '%s\n' "$n"
}

# True when process $1 is a netmonitor proxy listening on this gateway and port ($3, default
# this run's), started at $2 (proc_start) when given: a pid file can outlive its process, and
# the pid can be reused by something else, even by another proxy with the same arguments.
# shellcheck disable=SC2317  # called from the trap
is_our_proxy() {
  local args
  [ -z "${2:-}" ] || [ "$(proc_start "$1")" = "$2" ] || return 1
  args=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || ps -o args= -p "$1" 2>/dev/null) || return 1
  case $args in
    *" run --listen $gateway --port ${3:-$port} "*) return 0 ;;
    *) return 1 ;;
  esac
}

# True when the netmonitor answering on this gateway and port $1 belongs to this data dir: one
# of the data dir's proxies says it listens there (`netmonitor status --json`, asked once;
# 0.0.0.0 listens on every IPv4 address, so nothing else can hold the gateway's port), or it is
# the one a run of this script started for this network (its pid file, process running with
# the same arguments). A proxy of another data dir would hold the container to other rules and
# prompts.
proxies=""
proxies_read=0
owns_port() {
  local p=$1 pid start
  if [ "$proxies_read" = 0 ]; then
    proxies=$(nm_netmonitor status --json 2>/dev/null) || proxies=""
    proxies_read=1
  fi
  case $proxies in
    *"\"listen\":\"$gateway:$p\""* | *"\"listen\":\"0.0.0.0:$p\""*) return 0 ;;
  esac
  local file="$data_dir/netmonitor-proxy-$gateway-$p.pid"
  [ -r "$file" ] && read -r pid _ _ _ start <"$file" && [ -n "$pid" ] &&
    is_our_proxy "$pid" "${start:-}" "$p"
}

# Stops the proxy whose process group leader is $1; waits up to 10 s.
# shellcheck disable=SC2317  # called from the trap
stop_proxy() {
  kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null
  for _ in $(seq 1 50); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.2
  done
  nm_warn "the proxy did not stop within 10s; killing it"
  kill -KILL -- "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null
}

# What the EXIT trap undoes. The proxy and the network are shared by concurrent runs: the
# last run to leave stops a proxy that one of these scripts started (pid file) and removes a
# network one of them created (label netmonitor.managed), never what the user set up. The
# port's accept rule goes when no netmonitor listens there any more.
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local status=$?
  # A second Ctrl-C or SIGTERM must not cut the cleanup short (a stopped proxy with its
  # port still open, a network left behind).
  trap - EXIT
  trap '' INT TERM HUP
  set +e
  # The watcher first, and wait until it is gone: it must not restore rules that this cleanup
  # removes. (It finishes the firewall command it is running, if any, then exits.)
  if [ -n "$watcher_pid" ]; then
    kill -TERM "$watcher_pid" 2>/dev/null
    wait "$watcher_pid" 2>/dev/null
    watcher_pid=""
  fi
  [ -n "$tmp_dir" ] && rm -rf "$tmp_dir"
  [ -n "$probe" ] && docker rm -f "$probe" >/dev/null 2>&1
  [ -n "$gateway" ] || exit "$status"
  take_lock || nm_warn "another run holds $lock_file; cleaning up anyway"
  [ -n "$run_file" ] && rm -f "$run_file"
  local containers runs others pid_line pid pid_gateway pid_port pid_keep pid_start proxy_up=0
  containers=$(docker network inspect --format '{{len .Containers}}' "$network_id" 2>/dev/null || echo 0)
  runs=$(other_runs)
  others=$((containers + runs))
  pid_line=$(cat "$pid_file" 2>/dev/null)
  read -r pid pid_gateway pid_port pid_keep pid_start <<<"$pid_line"
  if [ -z "$pid" ] || [ "$pid_gateway" != "$gateway" ] || [ "$pid_port" != "$port" ] ||
    ! is_our_proxy "$pid" "$pid_start"; then
    # The pid file is gone or stale; a proxy this run started is still ours.
    [ -z "$pid" ] || rm -f "$pid_file"
    pid=""
    if [ -n "$started_proxy_pid" ] && is_our_proxy "$started_proxy_pid" "$started_proxy_start"; then
      pid=$started_proxy_pid pid_keep=$keep_proxy pid_start=$started_proxy_start
    fi
  fi
  if [ -n "$pid" ]; then
    if [ "$pid_keep" = 1 ]; then
      # Its process group: with the npx fallback, $pid is npm, which does not pass SIGTERM on.
      nm_info "the proxy keeps running (pid $pid, --keep-proxy); stop it with: kill -- -$pid. Port $port stays open to network $network (and the network stays, if this script made it) until a later run of this script finds the proxy gone and cleans up"
      proxy_up=1
    elif [ "$others" -gt 0 ]; then
      nm_info "the proxy keeps running (pid $pid): network $network is still in use (containers: $containers, other runs: $runs)"
      proxy_up=1
    else
      nm_info "stopping the proxy (pid $pid)"
      stop_proxy "$pid"
    fi
    if [ "$proxy_up" = 1 ]; then
      # Whoever leaves last must find it.
      nm_write_file "$pid_file" "$pid $gateway $port $pid_keep ${pid_start:-$(proc_start "$pid")}" ||
        nm_warn "cannot write $pid_file: the last run to leave will not stop the proxy"
    else
      rm -f "$pid_file"
    fi
  elif [ "$reused_proxy" = 1 ]; then
    nm_info "the proxy on $gateway:$port was already running; it keeps running"
  fi
  local managed network_gone=0
  managed=$(docker network inspect --format '{{index .Labels "netmonitor.managed"}}' "$network_id" 2>/dev/null)
  # A foreign listener (refused at the start) does not keep the network.
  if [ "$managed" = 1 ] && [ "$others" = 0 ] &&
    { [ "$foreign_listener" = 1 ] || ! nm_port_open "$gateway" "$port"; }; then
    local why
    if why=$(docker network rm "$network_id" 2>&1 >/dev/null); then
      nm_info "removed network $network"
      network_gone=1
      [ -n "$bridge" ] && nm_firewall_remove "$bridge"
    else
      # A container joined after the count: the network, and so its rules, stay.
      nm_warn "network $network stays (${why##*$'\n'}); so do its firewall rules"
    fi
  fi
  # A port stays open to the network only while netmonitor listens there: whatever listens
  # on it later must not be reachable from the containers. (Also after --no-host-firewall:
  # another run's rules may be there.)
  if [ "$network_gone" = 0 ]; then
    local up_port=""
    [ "$proxy_up" = 0 ] || up_port=$port
    if [ "$foreign_listener" = 1 ]; then
      nm_firewall_close_port "$bridge" "$gateway" "$port"
      up_port=$port # closed: no need to ask it again
    fi
    nm_firewall_prune "$bridge" "$gateway" "$up_port"
  fi
  release_lock
  exit "$status"
}
# Ctrl-C (without a TTY) or SIGTERM: stop the container first, so the cleanup sees it gone.
# shellcheck disable=SC2317  # invoked by the trap
on_signal() {
  trap '' INT TERM
  if [ -n "$docker_pid" ] && kill -0 "$docker_pid" 2>/dev/null; then
    nm_info "stopping container $name"
    docker stop -t 5 "$name" >/dev/null 2>&1 || kill -TERM "$docker_pid" 2>/dev/null
    wait "$docker_pid" 2>/dev/null || true
  fi
  exit "$1"
}
docker_pid=""
watcher_pid=""
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

take_lock || nm_die "another run has held $lock_file for over 300s"

# 1. The internal network and its gateway. Its containers must reach nothing but the proxy:
# not the outside (--internal), not each other (no inter-container communication: Docker would
# otherwise accept bridge-to-bridge traffic, unseen by the proxy), and not the proxy of another
# data dir. The host firewall opens every proxy port on the gateway to every container of the
# network, so one network serves one data dir: the networks this script creates carry the data
# dir in a label (netmonitor.data-dir), and so do its containers.
create_network() {
  docker network create --internal -o com.docker.network.bridge.enable_icc=false \
    --label netmonitor.managed=1 --label "netmonitor.data-dir=$data_dir_abs" \
    "$network" >/dev/null 2>&1
}
# `docker network inspect` of the network ($network_id once known) with format $1; "" for a
# label or option that is not there.
net_inspect() {
  local out
  out=$(docker network inspect --format "$1" "${network_id:-$network}" 2>/dev/null) || return 1
  [ "$out" != "<no value>" ] || out=""
  printf '%s\n' "$out"
}
# The Linux bridge of the network $network_id.
net_bridge() {
  local name
  name=$(net_inspect '{{index .Options "com.docker.network.bridge.name"}}' || true)
  printf '%s\n' "${name:-br-${network_id:0:12}}"
}
for attempt in 1 2; do
  network_id=""
  if ! docker network inspect "$network" >/dev/null 2>&1; then
    if create_network; then
      nm_info "created internal network $network"
    fi
    # Otherwise another run created it at the same moment: inspect it below.
  fi
  network_id=$(net_inspect '{{.Id}}') || network_id=""
  [ -n "$network_id" ] || nm_die "cannot create or inspect Docker network $network"
  internal=$(net_inspect '{{.Internal}}' || true)
  if [ "$internal" != true ]; then
    nm_die "network $network is not internal, so containers on it could bypass the proxy; remove it (docker network rm $network) or choose another with --network"
  fi
  owner=$(net_inspect '{{index .Labels "netmonitor.data-dir"}}' || true)
  if [ -n "$owner" ] && [ "$owner" != "$data_dir_abs" ]; then
    nm_die "network $network belongs to the data dir $owner (label netmonitor.data-dir), not to $data_dir_abs: one network serves one data dir, since its containers can reach every netmonitor proxy open on it, and would get that data dir's rules. Choose another network with --network (NETMONITOR_NETWORK)"
  fi
  # Docker reads the option as a Go boolean; unset means on.
  icc=$(net_inspect '{{index .Options "com.docker.network.bridge.enable_icc"}}' || true)
  case $icc in 0 | f | F | false | FALSE | False) break ;; esac
  # Containers reach each other directly. A network that an older version of this script made
  # (label netmonitor.managed) and that nothing uses is made again, as the last run to leave
  # it would have removed it anyway; any other is the user's, or in use: refused.
  managed=$(net_inspect '{{index .Labels "netmonitor.managed"}}' || true)
  containers=$(net_inspect '{{len .Containers}}' || echo "?")
  runs=$(other_runs)
  if [ "$attempt" = 1 ] && [ "$managed" = 1 ] && [ "$containers" = 0 ] && [ "$runs" = 0 ]; then
    old_bridge=$(net_bridge)
    if docker network rm "$network_id" >/dev/null 2>&1; then
      nm_firewall_remove "$old_bridge"
      nm_info "removed network $network, made by an older netmonitor with inter-container communication on; making it again with it off"
      continue
    fi
  fi
  if [ "$managed" = 1 ]; then
    why="it is in use (containers: $containers, other runs: $runs), so it is not made again now"
  else
    why="it was not made by this script, which never changes or removes a network of yours"
  fi
  nm_die "network $network lets its containers reach each other directly, not through the proxy (com.docker.network.bridge.enable_icc is not false), and $why. Remove it once no container uses it (docker network rm $network; the next run makes it again without), or choose another network with --network (make one with: docker network create --internal -o com.docker.network.bridge.enable_icc=false NAME)"
done
# Containers that runs of another data dir started on this network (their label
# netmonitor.data-dir) would share its proxy ports with ours.
members=()
# shellcheck disable=SC2016  # a Go template, not shell
for id in $(net_inspect '{{range $id, $c := .Containers}}{{$id}} {{end}}' || true); do
  members+=("$id")
done
if [ "${#members[@]}" -gt 0 ]; then
  while IFS= read -r owner; do
    case $owner in "" | "<no value>" | "$data_dir_abs") continue ;; esac
    nm_die "network $network is in use by containers of the data dir $owner: one network serves one data dir, since its containers can reach every netmonitor proxy open on it, and would get that data dir's rules. Choose another network with --network (NETMONITOR_NETWORK)"
  done < <(docker inspect --format '{{index .Config.Labels "netmonitor.data-dir"}}' "${members[@]}" 2>/dev/null || true)
fi
gateway=$(net_inspect '{{range .IPAM.Config}}{{if .Gateway}}{{.Gateway}}{{"\n"}}{{end}}{{end}}' |
  grep -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' | head -n 1 || true)
[ -n "$gateway" ] || nm_die "network $network has no IPv4 gateway"
bridge=$(net_bridge)
mkdir -p "$runs_dir"
run_file="$runs_dir/$$"
nm_write_file "$run_file" "$network_id $(proc_start $$)" || nm_die "cannot write $run_file"
# "PID GATEWAY PORT KEEP START" of a proxy one of these scripts started in the background
# (START: proc_start; older scripts wrote no START).
pid_file="$data_dir/netmonitor-proxy-$gateway-$port.pid"
# Before one pid file per gateway and port, there was one for the data dir: take over what it
# says about this gateway and port, so that proxy is stopped like any other.
legacy_pid_file="$data_dir/netmonitor-proxy.pid"
if [ -f "$legacy_pid_file" ] && [ ! -e "$pid_file" ]; then
  legacy_gateway="" legacy_port=""
  read -r _ legacy_gateway legacy_port _ <"$legacy_pid_file" || true
  if [ "$legacy_gateway" = "$gateway" ] && [ "$legacy_port" = "$port" ]; then
    mv "$legacy_pid_file" "$pid_file" ||
      nm_warn "cannot take over $legacy_pid_file; the proxy it names is not stopped by this run"
  fi
fi

# 2. Something already listening on the gateway's port must be netmonitor: the firewall opens
# that port to the container.
if nm_port_open "$gateway" "$port"; then
  nm_is_netmonitor "$gateway" "$port" || {
    foreign_listener=1
    nm_die "$gateway:$port is in use by something that is not a netmonitor proxy; the container would reach it directly. Stop it, or choose another port with --port"
  }
  if ! owns_port "$port"; then
    listens=$(grep -o '"listen":"[^"]*"' <<<"$proxies" | cut -d'"' -f4 | paste -sd ' ' -) || true
    nm_die "$gateway:$port is served by a netmonitor proxy that is not one of $data_dir's (they listen on: ${listens:-nothing}): another data dir's, whose rules and prompts the container would get, or an older netmonitor that \`netmonitor status\` cannot see. Stop it, or choose another port with --port"
  fi
  reused_proxy=1
fi

# 3. The host firewall: fail closed.
if [ "$host_firewall" = 1 ]; then
  firewall_status=0
  nm_firewall_apply "$bridge" "$gateway" "$port" owns_port || firewall_status=$?
  case $firewall_status in
    0) ;;
    2) nm_die "network $network is open to a netmonitor proxy that is not one of $data_dir's, on $gateway:$NM_FIREWALL_FOREIGN_PORT: another data dir's (or an older netmonitor that \`netmonitor status\` cannot see). One network serves one data dir, since its containers can reach every proxy open on it, and would get that data dir's rules. Choose another network with --network (NETMONITOR_NETWORK), or stop that proxy" ;;
    *) nm_die "cannot add the host firewall rules: $NM_FIREWALL_ERROR. Without them, every service on this host that listens on all addresses is reachable from the container. Run as root (or with passwordless sudo), or pass --no-host-firewall (NETMONITOR_HOST_FIREWALL=0) to run without them" ;;
  esac
else
  nm_warn "no host firewall (--no-host-firewall): every service on this host that listens on all addresses is reachable from the container"
fi

# 4. The proxy, listening on the gateway.
if [ "$reused_proxy" = 1 ]; then
  nm_info "reusing the proxy already listening on $gateway:$port"
  if [ "${#run_args[@]}" -gt 0 ]; then
    nm_warn "--proxy-arg/NETMONITOR_RUN_ARGS are ignored: the proxy is already running"
  fi
else
  proxy_out="$data_dir/netmonitor-proxy-$gateway-$port.out"
  nm_info "starting the proxy on $gateway:$port (output: $proxy_out)"
  # A session of its own: the container's Ctrl-C must not reach the proxy. Its stdin is not a
  # terminal, so it asks through the control socket (`netmonitor prompt`), never on this tty.
  prompt_via=(--prompt-via socket)
  for arg in "${run_args[@]}"; do
    case $arg in --non-interactive | --prompt-via | --prompt-via=*) prompt_via=() ;; esac
  done
  # Outputs of proxies that are gone (no pid file: they stopped, or a later run cleaned up after
  # them), kept for a look after they stopped; each new network has a new gateway, so they
  # would pile up.
  for old_out in "$data_dir"/netmonitor-proxy-*.out; do
    [ -f "$old_out" ] && [ ! -e "${old_out%.out}.pid" ] && rm -f -- "$old_out"
  done
  # A new file (removed, then created exclusively): never written through a symlink.
  out_fd=""
  rm -f -- "$proxy_out"
  set -C
  exec {out_fd}>"$proxy_out" || out_fd=""
  set +C
  [ -n "$out_fd" ] || nm_die "cannot create $proxy_out"
  NETMONITOR_DATA_DIR=$data_dir setsid "${NM_CMD[@]}" run --listen "$gateway" --port "$port" \
    "${prompt_via[@]}" "${run_args[@]}" >&"$out_fd" 2>&1 </dev/null {lock_fd}>&- {out_fd}>&- &
  started_proxy_pid=$!
  exec {out_fd}>&-
  started_proxy_start=$(proc_start "$started_proxy_pid")
  nm_write_file "$pid_file" "$started_proxy_pid $gateway $port $keep_proxy $started_proxy_start" ||
    nm_warn "cannot write $pid_file: the last run to leave will not stop the proxy"
  deadline=$((SECONDS + ${NETMONITOR_START_TIMEOUT:-60}))
  until grep -q 'Listening on' "$proxy_out" 2>/dev/null; do
    if ! kill -0 "$started_proxy_pid" 2>/dev/null; then
      started_proxy_pid=""
      rm -f "$pid_file"
      sed 's/^/  | /' "$proxy_out" >&2
      if grep -q 'Another netmonitor proxy is running' "$proxy_out"; then
        nm_die "a netmonitor proxy is already running for $data_dir, but not on $gateway:$port where the container can reach it; stop it, or restart it with: netmonitor run --listen $gateway --port $port --prompt-via socket"
      fi
      nm_die "the proxy exited at start (output above, also in $proxy_out)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      sed 's/^/  | /' "$proxy_out" >&2
      nm_die "the proxy did not start listening within ${NETMONITOR_START_TIMEOUT:-60}s"
    fi
    sleep 0.2
  done
fi
release_lock

# 5. The CA: the image's bundle (or the host's) plus the netmonitor CA.
tmp_dir=$(mktemp -d "${TMPDIR:-/tmp}/netmonitor-run.XXXXXX")
chmod 755 "$tmp_dir"
ca_mounts=()
ca_env=()
ca_path=$(nm_netmonitor ca path 2>/dev/null) || ca_path=""
# Fallback: the CA's place in the data dir (netmonitor-ca.pem), where `netmonitor run` creates it.
[ -s "$ca_path" ] || ca_path="$data_dir/netmonitor-ca.pem"
if [ -s "$ca_path" ]; then
  cp "$ca_path" "$tmp_dir/ca.crt"
  # The image's own bundles, so the container keeps trusting what it trusted.
  probe=$(docker create --pull "$pull" --network none "$image" /bin/true 2>/dev/null || true)
  store_paths=()
  if [ -n "$probe" ]; then
    i=0
    for path in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/ca-bundle.pem; do
      if docker cp -L "$probe:$path" - 2>/dev/null | tar -xOf - >"$tmp_dir/store-$i.pem" 2>/dev/null &&
        [ -s "$tmp_dir/store-$i.pem" ]; then
        cat "$tmp_dir/ca.crt" >>"$tmp_dir/store-$i.pem"
        store_paths+=("$path")
        i=$((i + 1))
      else
        rm -f "$tmp_dir/store-$i.pem"
      fi
    done
    docker rm -f "$probe" >/dev/null 2>&1 || true
    probe=""
  fi
  if [ "${#store_paths[@]}" -gt 0 ]; then
    cp "$tmp_dir/store-0.pem" "$tmp_dir/ca-bundle.pem"
  else
    for host_bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
      if [ -s "$host_bundle" ]; then
        cat "$host_bundle" >"$tmp_dir/ca-bundle.pem"
        break
      fi
    done
    cat "$tmp_dir/ca.crt" >>"$tmp_dir/ca-bundle.pem"
  fi
  chmod 644 "$tmp_dir"/*.pem "$tmp_dir/ca.crt"
  ca_mounts+=(-v "$tmp_dir/ca.crt:/etc/netmonitor/ca.crt:ro")
  ca_mounts+=(-v "$tmp_dir/ca-bundle.pem:/etc/netmonitor/ca-bundle.pem:ro")
  if [ "$system_ca" = 1 ]; then
    for i in "${!store_paths[@]}"; do
      ca_mounts+=(-v "$tmp_dir/store-$i.pem:${store_paths[$i]}:ro")
    done
  fi
  for var in SSL_CERT_FILE REQUESTS_CA_BUNDLE CURL_CA_BUNDLE PIP_CERT GIT_SSL_CAINFO; do
    ca_env+=(-e "$var=/etc/netmonitor/ca-bundle.pem")
  done
  ca_env+=(-e "NODE_EXTRA_CA_CERTS=/etc/netmonitor/ca.crt")
else
  nm_warn "no netmonitor CA found (netmonitor ca path): HTTPS clients in the container will not trust the proxy"
fi

# 6. The firewall watcher. A firewall reload or flush (firewall-cmd --reload, ufw reload,
# netfilter-persistent reload, iptables -F) takes the rules away, and nothing else puts them back
# (Docker restores only its own): while the container runs, every second, check that they are
# all there (nm_firewall_check: one or two listings), and when they are not, write them again
# whole (nm_firewall_apply) and say so. When that fails: fail closed, stop the container.

# True while this script runs. The watcher ($BASHPID) is its child until it dies; a SIGKILL skips
# the cleanup that stops the watcher, which must not outlive the run.
# shellcheck disable=SC2317  # called by the watcher
script_alive() {
  local stat fields
  if read -r stat <"/proc/$BASHPID/stat" 2>/dev/null; then
    read -r -a fields <<<"${stat##*) }"
    [ "${fields[1]:-}" = "$$" ]
  else
    kill -0 "$$" 2>/dev/null
  fi
}
# The marker the watcher leaves when it stopped the container.
firewall_failed=""
# shellcheck disable=SC2317  # run in the background
watch_firewall() {
  set +e
  trap - EXIT
  # Ctrl-C and a hangup are the script's: it stops the container, then this watcher (TERM).
  trap '' INT HUP
  local sleeper="" missing
  trap '[ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; exit 0' TERM
  while script_alive; do
    missing=$(nm_firewall_check "$bridge" "$gateway" "$port")
    if [ -n "$missing" ]; then
      # Other runs of the data dir change the shared chain while they set up and clean up: take
      # turns with them (a cleanup then never sees its removal undone, nor a port it closed
      # reopened), but wait 2 s at most: a host left open matters more.
      take_lock 10 || true
      script_alive || break
      # Another run's watcher may have restored the rules meanwhile.
      missing=$(nm_firewall_check "$bridge" "$gateway" "$port")
    fi
    if [ -n "$missing" ]; then
      missing=${missing//$'\n'/, }
      # The proxies of the data dir, asked again: one may have started since the run began.
      proxies_read=0
      if nm_firewall_apply "$bridge" "$gateway" "$port" owns_port; then
        nm_warn "the host firewall of network $network was changed from outside (a firewall reload or flush?), missing: $missing. Restored the rules"
      else
        release_lock
        : >"$firewall_failed"
        printf 'netmonitor: error: %s\n' "the host firewall of network $network was changed from outside (missing: $missing), and restoring it failed: $NM_FIREWALL_ERROR. Stopping container $name: without the rules, every service on this host that listens on all addresses is reachable from it" >&2
        # (Until it is there: the watcher starts just before `docker run`.)
        until docker kill "$name" >/dev/null 2>&1; do
          script_alive || exit 1
          sleep 0.5
        done
        exit 1
      fi
    fi
    release_lock
    sleep 1 &
    sleeper=$!
    wait "$sleeper"
    sleeper=""
  done
}
if [ "$host_firewall" = 1 ]; then
  firewall_failed="$tmp_dir/firewall-failed"
  watch_firewall </dev/null >&2 &
  watcher_pid=$!
fi

# 7. The container.
proxy_url="http://$gateway:$port"
no_proxy="localhost,127.0.0.1,::1"
tty_args=(-i)
if [ -t 0 ] && [ -t 1 ]; then
  tty_args=(-it)
fi
nm_info "container $name on network $network; proxy $proxy_url"
nm_info "answer prompts in another terminal with: netmonitor prompt   (or ./docker/manage-firewall.sh --prompt)"
status=0
# No NET_RAW: with it the container can forge packets (source addresses of the host's own flows)
# and send frames that are not IP, which the host firewall and enable_icc=false do not see. The
# user's --docker-arg comes later, so --cap-add=NET_RAW there gives it back.
docker run --rm --pull "$pull" "${tty_args[@]}" \
  --name "$name" \
  --label "netmonitor.network=$network" \
  --label "netmonitor.data-dir=$data_dir_abs" \
  --network "$network_id" \
  --dns "$gateway" \
  --add-host "host.docker.internal:$gateway" \
  --cap-drop NET_RAW \
  -e "HTTP_PROXY=$proxy_url" -e "HTTPS_PROXY=$proxy_url" \
  -e "http_proxy=$proxy_url" -e "https_proxy=$proxy_url" \
  -e "NO_PROXY=$no_proxy" -e "no_proxy=$no_proxy" \
  "${ca_env[@]}" "${ca_mounts[@]}" \
  "${docker_args[@]}" \
  "$image" "${command_args[@]}" <&0 &
# In the background (stdin kept: `<&0`) so that a signal reaches our trap at once.
docker_pid=$!
wait "$docker_pid" || status=$?
docker_pid=""
if [ -n "$firewall_failed" ] && [ -e "$firewall_failed" ]; then
  nm_die "container $name was stopped: its host firewall rules were taken away and could not be restored (see above)"
fi
exit "$status"
