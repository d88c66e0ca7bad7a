#!/usr/bin/env bash
# Shared helpers for the docker/*.sh scripts. Sourced, never run.
# shellcheck shell=bash

# The repository root (this file lives in <repo>/docker/).
NM_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NM_DENO_VERSION=2.9.6
# Deno's own update check would look up dl.deno.land each time a proxy starts.
export DENO_NO_UPDATE_CHECK=1
# Everything the scripts create (the data dir, pid, run and output files) is the user's alone,
# whatever the caller's umask: the proxy's output holds request lines, and a data dir others can
# write to lets them change the rules. (What containers must read gets explicit modes.)
umask 077

nm_info() { printf 'netmonitor: %s\n' "$*" >&2; }
nm_warn() { printf 'netmonitor: warning: %s\n' "$*" >&2; }
nm_die() {
  printf 'netmonitor: error: %s\n' "$*" >&2
  exit 1
}
# A usage error: exit 2 with a hint, like the CLI.
nm_usage_error() {
  printf 'netmonitor: error: %s\n(try --help)\n' "$*" >&2
  exit 2
}

# The data dir: rules, access log, CA, control socket (the original design's ~/docker-agent-data).
nm_data_dir() {
  printf '%s\n' "${NETMONITOR_DATA_DIR:-${HOME:-/root}/docker-agent-data}"
}

# nm_private_dir DIR: makes sure DIR is a directory of this user's alone: creates it (mode 0700)
# when missing, takes away other users' read access, and refuses (exit 1) a DIR that belongs to
# someone else or that other users can write to. Whoever can write in the data dir can change
# its rules, or plant a symlink where a run (as root, too) writes its files.
nm_private_dir() {
  local dir=$1 line mode owner
  # Before anything is made in it: a folder others could swap is no place for a data dir.
  nm_check_ancestors "$dir"
  if [ ! -e "$dir" ] && [ ! -L "$dir" ]; then
    (umask 077 && mkdir -p -- "$dir") || nm_die "cannot create the data dir $dir"
  fi
  [ -d "$dir" ] || nm_die "the data dir $dir is not a directory"
  # ls: the mode string and the owner's uid, the same with GNU, BSD and BusyBox.
  line=$(LC_ALL=C ls -ldLn -- "$dir" 2>/dev/null) || nm_die "cannot read the data dir $dir"
  mode=${line%% *}
  read -r _ _ owner _ <<<"$line"
  if [ ! -O "$dir" ]; then
    nm_die "the data dir $dir belongs to uid $owner, not to you (uid $(id -u)): its rules, CA key and log must be yours alone, and its owner could plant files there that this run would use. Use a data dir of your own (NETMONITOR_DATA_DIR)"
  fi
  case ${mode:5:1}${mode:8:1} in
    *w*)
      # A sticky folder (/tmp) is shared on purpose: making it private would break everyone else.
      if [[ ${mode:9:1} == [tT] ]]; then
        nm_die "the data dir $dir ($mode) can be written by other users: they could have changed its rules or planted files in it. It is a shared folder (sticky bit, like /tmp), so do not make it private: use a folder of your own inside it, e.g. NETMONITOR_DATA_DIR=${dir%/}/netmonitor"
      fi
      nm_die "the data dir $dir ($mode) can be written by other users: they could have changed its rules or planted files in it. Check what is in it, then make it private: chmod 700 $dir" ;;
  esac
  if [[ ${mode:4:3}${mode:7:3} == *[rwxst]* ]]; then
    chmod go-rwx -- "$dir" || nm_die "cannot make the data dir $dir private (chmod 700 $dir)"
  fi
}

# nm_check_ancestors DIR: refuses (exit 1) a data dir that other users could move away and replace
# with one of their own, as OpenSSH's StrictModes does (and `netmonitor`'s own check): every folder
# above it, on its real path and on the path as given (where a symlink to it lives), must belong
# to root or to you, and must not be writable by group or others unless it has the sticky bit (as
# /tmp has). Folders that do not exist yet are skipped: they are made under checked ones.
nm_check_ancestors() {
  local dir=$1 me path folder line mode owner
  me=$(id -u)
  local paths=()
  # realpath -m: GNU coreutils; elsewhere the path as given is checked.
  path=$(realpath -m -- "$dir" 2>/dev/null) && paths+=("$path")
  path=$(realpath -ms -- "$dir" 2>/dev/null) || path=$dir
  paths+=("$path")
  for path in "${paths[@]}"; do
    folder=$path
    while :; do
      folder=$(dirname -- "$folder")
      [ -d "$folder" ] && line=$(LC_ALL=C ls -ldLn -- "$folder" 2>/dev/null) && {
        mode=${line%% *}
        read -r _ _ owner _ <<<"$line"
        if [ "$owner" != 0 ] && [ "$owner" != "$me" ]; then
          nm_die "the folder $folder above the data dir $dir belongs to uid $owner, neither to you (uid $me) nor to root: its owner could move the data dir away and put one of their own in its place. Use a data dir in folders that only you or root own (NETMONITOR_DATA_DIR)"
        fi
        case ${mode:5:1}${mode:8:1}:${mode:9:1} in
          *w*:[tT]) ;;
          *w*) nm_die "the folder $folder above the data dir $dir ($mode) can be written by other users and has no sticky bit: they could move the data dir away and put one of their own in its place. Take their write access away: chmod go-w $folder (for a shared folder like /tmp: chmod +t $folder), or use a data dir elsewhere (NETMONITOR_DATA_DIR)" ;;
        esac
      }
      [ "$folder" = / ] || [ "$folder" = . ] && break
    done
  done
}

# nm_write_file FILE TEXT: replaces FILE with a new file (mode 0600 under the scripts' umask)
# holding TEXT and a newline. Never writes through a symlink or into a file someone else put
# there: FILE is removed first, then created exclusively (noclobber, O_EXCL).
nm_write_file() {
  rm -f -- "$1" 2>/dev/null
  (set -C && printf '%s\n' "$2" >"$1") 2>/dev/null
}

# Fills the array NM_CMD with the command that runs netmonitor:
#   $NETMONITOR_BIN (split on spaces, e.g. "deno run -A main.ts"), else a `netmonitor` binary on
#   PATH, else `deno run -A <repo>/main.ts`, else `npx -y deno@2.9.6 run -A <repo>/main.ts`.
nm_resolve_cmd() {
  NM_CMD=()
  if [ -n "${NETMONITOR_BIN:-}" ]; then
    read -r -a NM_CMD <<<"$NETMONITOR_BIN"
  elif command -v netmonitor >/dev/null 2>&1; then
    NM_CMD=(netmonitor)
  elif command -v deno >/dev/null 2>&1; then
    NM_CMD=(deno run -A "--v8-flags=--max-semi-space-size=4,--expose-gc" "$NM_REPO/main.ts")
  elif command -v npx >/dev/null 2>&1; then
    NM_CMD=(npx -y "deno@$NM_DENO_VERSION" run -A "--v8-flags=--max-semi-space-size=4,--expose-gc" "$NM_REPO/main.ts")
  else
    nm_die "cannot find netmonitor: install the binary on PATH, install Deno, or set NETMONITOR_BIN"
  fi
}

# Runs netmonitor with the data dir exported, so every command sees the same files.
nm_netmonitor() {
  NETMONITOR_DATA_DIR=$(nm_data_dir) "${NM_CMD[@]}" "$@"
}

nm_require_docker() {
  command -v docker >/dev/null 2>&1 ||
    nm_die "docker is not installed (apt-get install docker.io)"
  local why
  if ! why=$(docker info --format '{{.ServerVersion}}' 2>&1); then
    nm_die "cannot talk to the Docker engine: ${why##*$'\n'}"
  fi
}

# nm_ensure_image IMAGE POLICY: makes sure IMAGE is here before anything is set up, pulling it
# (with docker's progress on stderr) when POLICY (missing, always, never) says so. Exits 1 when
# it cannot be had: a missing image must not first cost a network, a proxy and firewall rules.
nm_ensure_image() {
  local image=$1 policy=$2
  if [ "$policy" != always ] && docker image inspect "$image" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$policy" = never ]; then
    nm_die "image $image is not here, and --pull never (NETMONITOR_PULL) forbids pulling it: pull, build or load it first (docker pull $image), or choose another with --image"
  fi
  nm_info "pulling image $image"
  docker pull "$image" >&2 ||
    nm_die "cannot pull image $image (docker's reason above): check the name, or pull, build or load it first, or choose another with --image"
}

# True when a TCP connection to $1:$2 succeeds within a second.
nm_port_open() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# True when the listener on $1:$2 is a netmonitor proxy: a request that is not a proxy request
# gets netmonitor's own 400. Anything else on that port (a dev server, another proxy) must not be
# taken for the proxy, because the host firewall would then open it to the container.
nm_is_netmonitor() {
  local reply
  # shellcheck disable=SC2016  # expanded by the inner bash
  reply=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "GET / HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$1" "$2" >&3
    head -c 4096 <&3' _ "$1" "$2" 2>/dev/null | tr -d '\0') || true
  case $reply in
    "HTTP/1.1 400 "*"is not a proxy request: netmonitor is an HTTP proxy"*) return 0 ;;
    *) return 1 ;;
  esac
}

# nm_flag VAR NAME VALUE: sets VAR to 1 or 0 from a yes/no setting (1, true, yes, on / 0,
# false, no, off, or empty for 0); anything else is a usage error naming NAME. A typo in a
# security setting must not quietly mean "off".
nm_flag() {
  local -n _nm_flag=$1
  case ${3,,} in
    1 | true | yes | on) _nm_flag=1 ;;
    '' | 0 | false | no | off) _nm_flag=0 ;;
    *) nm_usage_error "invalid $2 '$3' (expected 1 or 0)" ;;
  esac
}

# Word-splits an environment variable holding extra arguments into the named array,
# e.g. NETMONITOR_DOCKER_ARGS="-v /src:/src -e FOO=1". No quoting inside: use the flags
# (--docker-arg ARG, repeatable) for arguments that contain spaces.
nm_split_words() {
  local -n _nm_out=$1
  _nm_out=()
  if [ -n "${2:-}" ]; then
    read -r -a _nm_out <<<"$2"
  fi
}

# Checks a --pull policy value.
nm_check_pull() {
  case $1 in
    missing | always | never) ;;
    *) nm_usage_error "invalid pull policy '$1' (expected missing, always or never)" ;;
  esac
}

# Prints the image and docker-arguments part of --help, shared by both run scripts.
nm_common_help() {
  cat <<'EOF'
Options shared by the run scripts (flags win over environment variables):
  -i, --image IMAGE      container image (env NETMONITOR_IMAGE, default debian:bookworm-slim);
                         a first positional argument is taken as the image as well
  -d, --docker-arg ARG   extra argument for `docker run`, repeatable
                         (env NETMONITOR_DOCKER_ARGS, split on spaces)
      --name NAME        container name (default netmonitor-<random>)
      --pull POLICY      docker's pull policy for the image: missing, always or never
                         (env NETMONITOR_PULL, default missing)
  -h, --help             this help
Everything after the image (or after --) is the command to run in the container
(default: the image's own command, usually a shell).
EOF
}
