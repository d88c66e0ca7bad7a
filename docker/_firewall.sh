#!/usr/bin/env bash
# Host firewall for the netmonitor Docker network. Sourced by run-monitored.sh, never run.
# shellcheck shell=bash
#
# Docker's `--internal` networks drop forwarded traffic, but a container still reaches every
# service of the host itself (packets to the gateway or to any host address take the INPUT
# path, which Docker leaves open). These rules close that: from the network's bridge, only the
# proxy port on the gateway is accepted; everything else gets a reset or an ICMP error, so
# clients fail fast. The gateway address answers only the host itself (not other containers,
# not other machines). One chain per bridge, NETMONITOR-<bridge>, jumped to from INPUT. FORWARD
# rejects the bridge both ways, whether or not Docker's own --internal rules are there.
#
# IPv6 from the bridge is refused entirely (the proxy listens on IPv4). Docker turns IPv6 off
# inside the container, but the host's side of the bridge keeps a link-local address, which a
# container with NET_ADMIN, or one that writes raw frames (NET_RAW, a default capability), can
# reach. With ip6tables, INPUT and FORWARD reject the bridge; without it (or when it fails), the
# host's IPv6 is switched off on the bridge; when neither works, the rules are not applied.

# Why the last nm_firewall_apply failed, for the caller's error message; and the port of another
# data dir's proxy that made it refuse (return 2).
NM_FIREWALL_ERROR=""
NM_FIREWALL_FOREIGN_PORT=""
# How the last nm_firewall_apply refused IPv6 from the bridge, for nm_firewall_check: "rules"
# (ip6tables), "off" (the host's IPv6 is off on the bridge).
NM_FIREWALL_IPV6=""

# Fills NM_ROOT (empty, or sudo -n), NM_IPT, NM_IPT_RESTORE and NM_IP6T (empty when ip6tables
# is missing); returns 1, with NM_FIREWALL_ERROR set, when we cannot change the firewall.
nm_firewall_tools() {
  # A user's PATH often lacks the sbin directories, even when sudo can run what is there.
  case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac
  NM_ROOT=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      NM_ROOT=(sudo -n)
    else
      NM_FIREWALL_ERROR="changing the firewall needs root or passwordless sudo"
      return 1
    fi
  fi
  if ! command -v iptables >/dev/null 2>&1 || ! command -v iptables-restore >/dev/null 2>&1; then
    NM_FIREWALL_ERROR="iptables is not installed (apt-get install iptables)"
    return 1
  fi
  NM_IPT=("${NM_ROOT[@]}" iptables -w)
  # The restore command of the same backend as iptables (nf_tables or legacy), or the chain
  # would be written where the INPUT jumps do not look.
  NM_IPT_RESTORE=("${NM_ROOT[@]}" iptables-restore -w --noflush)
  local backend
  backend=$(iptables -V 2>/dev/null) || backend=""
  case $backend in
    *"(nf_tables)"*) command -v iptables-nft-restore >/dev/null 2>&1 &&
      NM_IPT_RESTORE=("${NM_ROOT[@]}" iptables-nft-restore -w --noflush) ;;
    *"(legacy)"*) command -v iptables-legacy-restore >/dev/null 2>&1 &&
      NM_IPT_RESTORE=("${NM_ROOT[@]}" iptables-legacy-restore -w --noflush) ;;
  esac
  NM_IP6T=()
  if command -v ip6tables >/dev/null 2>&1; then
    NM_IP6T=("${NM_ROOT[@]}" ip6tables -w)
  fi
}

# Runs a firewall command; on failure keeps its last line of output in NM_FIREWALL_ERROR.
nm_fw() {
  local out
  if ! out=$("$@" 2>&1); then
    NM_FIREWALL_ERROR="'$*' failed: ${out##*$'\n'}"
    return 1
  fi
}

# The chain that holds one bridge's rules (iptables limits names to 28 characters).
nm_firewall_chain() {
  printf 'NETMONITOR-%s\n' "${1:0:17}"
}

# True when the host's IPv6 is on for interface $1. An interface the kernel does not list
# counts as on: better refuse than guess.
nm_ipv6_on() {
  [ -d /proc/sys/net/ipv6/conf ] || return 1
  local flag=/proc/sys/net/ipv6/conf/$1/disable_ipv6
  [ -r "$flag" ] || return 0
  [ "$(cat "$flag")" != 1 ]
}

# Refuses IPv6 from the bridge: ip6tables rules, else the bridge's IPv6 switched off.
nm_firewall_ipv6() {
  local bridge=$1 chain ip6_error=""
  if [ "${#NM_IP6T[@]}" -gt 0 ]; then
    for chain in INPUT FORWARD; do
      "${NM_IP6T[@]}" -C "$chain" -i "$bridge" -j REJECT 2>/dev/null ||
        nm_fw "${NM_IP6T[@]}" -I "$chain" 1 -i "$bridge" -j REJECT || {
        ip6_error=$NM_FIREWALL_ERROR
        break
      }
    done
    if [ -z "$ip6_error" ]; then
      NM_FIREWALL_IPV6=rules
      return 0
    fi
  else
    ip6_error="ip6tables is not installed"
  fi
  NM_FIREWALL_IPV6=off
  nm_ipv6_on "$bridge" || return 0
  printf '1\n' | "${NM_ROOT[@]}" tee "/proc/sys/net/ipv6/conf/$bridge/disable_ipv6" >/dev/null 2>&1
  if nm_ipv6_on "$bridge"; then
    NM_FIREWALL_ERROR="cannot refuse IPv6 from $bridge: $ip6_error, and switching IPv6 off on $bridge failed"
    return 1
  fi
  nm_warn "$ip6_error; IPv6 is switched off on $bridge instead"
}

# The accept rule of one proxy port, as iptables takes it (after -A/-I/-C/-D CHAIN).
nm_firewall_accept_rule() {
  printf '%s\n' "-i $1 -p tcp -d $2 --dport $3 -j ACCEPT"
}

# The ports of BRIDGE's accept rules on GATEWAY, one per line (needs nm_firewall_tools).
nm_firewall_ports() {
  local chain line p
  chain=$(nm_firewall_chain "$1")
  while IFS= read -r line; do
    case $line in
      "-A $chain "*" -j ACCEPT")
        [[ $line == *" -d $2/32 "* && $line == *" -i $1 "* ]] || continue
        p=${line##*--dport }
        p=${p%% *}
        [[ ! $p =~ ^[0-9]+$ ]] || printf '%s\n' "$p"
        ;;
    esac
  done < <("${NM_IPT[@]}" -S "$chain" 2>/dev/null || true)
}

# nm_firewall_apply BRIDGE GATEWAY PORT [OWNS]: idempotent; one more PORT adds one more accept
# rule. Returns 1 with NM_FIREWALL_ERROR set when any part could not be applied, and 2 (chain
# untouched, NM_FIREWALL_FOREIGN_PORT set) when the bridge is open for a proxy that OWNS says
# is not the caller's.
#
# The chain is written whole, in one iptables-restore transaction, every time: a chain left
# half-built (a run killed mid-way, a rule deleted by hand) must never be trusted, and rules
# added one by one would leave a moment with the accepts in place but not the rejects. The
# accept rules of other ports are carried over while a netmonitor answers on them: an accept
# left by a proxy that died must not open the port to whatever listens there next.
#
# OWNS (a command, called with a port) says whether the netmonitor answering on that port of
# the gateway is one of the caller's (same data dir). Every container on the bridge reaches
# every port the chain accepts, so a bridge serves one data dir: a port open for a proxy of
# another data dir would give the caller's containers that proxy's rules. It is not carried
# over and not closed either (its own containers use it): the caller is refused.
nm_firewall_apply() {
  local bridge=$1 gateway=$2 port=$3 owns=${4:-} chain ports p
  NM_FIREWALL_ERROR=""
  NM_FIREWALL_FOREIGN_PORT=""
  NM_FIREWALL_IPV6=""
  chain=$(nm_firewall_chain "$bridge")
  nm_firewall_tools || return 1
  ports=("$port")
  for p in $(nm_firewall_ports "$bridge" "$gateway"); do
    [[ " ${ports[*]} " != *" $p "* ]] || continue
    if nm_is_netmonitor "$gateway" "$p"; then
      if [ -n "$owns" ] && ! "$owns" "$p"; then
        NM_FIREWALL_FOREIGN_PORT=$p
        NM_FIREWALL_ERROR="$bridge is open to $gateway:$NM_FIREWALL_FOREIGN_PORT for a netmonitor proxy of another data dir"
        return 2
      fi
      ports+=("$p")
    else
      nm_info "closing port $p on $gateway: no netmonitor proxy answers there any more"
    fi
  done
  local rules
  rules="*filter"$'\n'":$chain - [0:0]"$'\n'
  # From the container network: nothing but the proxy port(s), whatever conntrack says. (A
  # container can forge packets, with NET_RAW, a default capability: ESTABLISHED first would
  # take a forged reply to any flow of the host's own, a DNS answer say, from the bridge.)
  for p in "${ports[@]}"; do
    rules+="-A $chain $(nm_firewall_accept_rule "$bridge" "$gateway" "$p")"$'\n'
  done
  rules+="-A $chain -i $bridge -p tcp -j REJECT --reject-with tcp-reset"$'\n'
  rules+="-A $chain -i $bridge -j REJECT --reject-with icmp-admin-prohibited"$'\n'
  # ...and to the gateway address from anywhere else, replies to connections already accepted,
  # and else only the host itself (other containers and other machines must not use this
  # proxy, or anything else listening there).
  rules+="-A $chain -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"$'\n'
  rules+="-A $chain -m addrtype --src-type LOCAL -j RETURN"$'\n'
  rules+="-A $chain -p tcp -j REJECT --reject-with tcp-reset"$'\n'
  rules+="-A $chain -j REJECT --reject-with icmp-admin-prohibited"$'\n'
  rules+="COMMIT"$'\n'
  local out
  if ! out=$(printf '%s' "$rules" | "${NM_IPT_RESTORE[@]}" 2>&1); then
    NM_FIREWALL_ERROR="'${NM_IPT_RESTORE[*]}' failed for chain $chain: ${out%%$'\n'*}"
    return 1
  fi
  # The jumps last: the chain is complete before any packet is sent to it.
  if ! "${NM_IPT[@]}" -C INPUT -i "$bridge" -j "$chain" 2>/dev/null; then
    nm_fw "${NM_IPT[@]}" -I INPUT 1 -i "$bridge" -j "$chain" || return 1
  fi
  if ! "${NM_IPT[@]}" -C INPUT -d "$gateway" -j "$chain" 2>/dev/null; then
    nm_fw "${NM_IPT[@]}" -I INPUT 2 -d "$gateway" -j "$chain" || return 1
  fi
  # Nothing is forwarded from or to the bridge. Docker's --internal rules say so too, but only
  # while Docker manages iptables: not with dockerd --iptables=false (where FORWARD often
  # accepts). The container has a default route via the gateway, so without these it would be
  # routed out past the proxy.
  local dir
  for dir in -i -o; do
    "${NM_IPT[@]}" -C FORWARD "$dir" "$bridge" -j REJECT 2>/dev/null ||
      nm_fw "${NM_IPT[@]}" -I FORWARD 1 "$dir" "$bridge" -j REJECT || return 1
  done
  nm_firewall_ipv6 "$bridge"
}

# True when LISTING (iptables -S output between newlines) has line $2, alone or followed by more
# words (REJECT's default --reject-with, which iptables prints).
nm_listed() {
  [[ $1 == *$'\n'"$2"[$' \n']* ]]
}

# nm_firewall_check BRIDGE GATEWAY [PORT]: prints what of the last nm_firewall_apply for BRIDGE
# is no longer in place (a firewall reload or flush took it away), one part a line; nothing when
# all is there. PORT: its accept rule is checked too, while a netmonitor answers there. Cheap enough to run every second: one
# `iptables -S`, and one `ip6tables -S` when IPv6 is refused with ip6tables (with the host's IPv6
# switched off on the bridge instead, that flag is read). A rule not found in the listing is asked
# for with `-C` before it counts as missing, so a listing printed in an unexpected format costs a
# few more calls, never a false alarm. A listing that cannot be read counts as everything missing.
nm_firewall_check() {
  local bridge=$1 gateway=$2 port=${3:-} chain listing listing6 item
  chain=$(nm_firewall_chain "$bridge")
  listing=$'\n'$("${NM_IPT[@]}" -S 2>/dev/null)$'\n' || listing=""
  # description|chain and rule as iptables -S prints them|the same rule for iptables -C
  local items=(
    "the INPUT jump from $bridge to $chain|INPUT -i $bridge -j $chain|INPUT -i $bridge -j $chain"
    "the INPUT jump for $gateway to $chain|INPUT -d $gateway/32 -j $chain|INPUT -d $gateway -j $chain"
    "the rejects in $chain|$chain -i $bridge -p tcp -j REJECT --reject-with tcp-reset|$chain -i $bridge -p tcp -j REJECT --reject-with tcp-reset"
    "the rejects in $chain|$chain -i $bridge -j REJECT --reject-with icmp-admin-prohibited|$chain -i $bridge -j REJECT --reject-with icmp-admin-prohibited"
    "the rejects in $chain|$chain -p tcp -j REJECT --reject-with tcp-reset|$chain -p tcp -j REJECT --reject-with tcp-reset"
    "the rejects in $chain|$chain -j REJECT --reject-with icmp-admin-prohibited|$chain -j REJECT --reject-with icmp-admin-prohibited"
    "the FORWARD reject from $bridge|FORWARD -i $bridge -j REJECT|FORWARD -i $bridge -j REJECT"
    "the FORWARD reject to $bridge|FORWARD -o $bridge -j REJECT|FORWARD -o $bridge -j REJECT"
  )
  # (Taken away while no netmonitor answers there, by another run's cleanup: not missing.)
  [ -z "$port" ] ||
    items+=("the accept of port $port in $chain|$chain -d $gateway/32 -i $bridge -p tcp -m tcp --dport $port -j ACCEPT|$chain $(nm_firewall_accept_rule "$bridge" "$gateway" "$port")")
  local desc listed check said=""
  for item in "${items[@]}"; do
    desc=${item%%|*} check=${item#*|}
    listed=${check%%|*} check=${check#*|}
    [ "$desc" != "$said" ] || continue
    nm_listed "$listing" "-A $listed" && continue
    # shellcheck disable=SC2086  # the rule's words
    [ -n "$listing" ] && "${NM_IPT[@]}" -C $check 2>/dev/null && continue
    [[ $listed != *" --dport "* ]] || nm_is_netmonitor "$gateway" "$port" || continue
    printf '%s\n' "$desc"
    said=$desc
  done
  case $NM_FIREWALL_IPV6 in
    rules)
      listing6=$'\n'$("${NM_IP6T[@]}" -S 2>/dev/null)$'\n' || listing6=""
      for item in INPUT FORWARD; do
        nm_listed "$listing6" "-A $item -i $bridge -j REJECT" && continue
        [ -n "$listing6" ] && "${NM_IP6T[@]}" -C "$item" -i "$bridge" -j REJECT 2>/dev/null && continue
        printf '%s\n' "the ip6tables $item reject from $bridge"
      done
      ;;
    off)
      # (read, not cat: no process every second)
      local flag=""
      [ -d /proc/sys/net/ipv6/conf ] || return 0
      read -r flag <"/proc/sys/net/ipv6/conf/$bridge/disable_ipv6" 2>/dev/null || true
      [ "$flag" = 1 ] || printf '%s\n' "IPv6 switched off on $bridge"
      ;;
  esac
}

# nm_firewall_close_port BRIDGE GATEWAY PORT: takes back PORT's accept rule, for a network that
# stays when its proxy stopped (whatever listens there later must not be open to the container).
nm_firewall_close_port() {
  local chain
  chain=$(nm_firewall_chain "$1")
  nm_firewall_tools || return 0
  local rule
  read -r -a rule <<<"$(nm_firewall_accept_rule "$1" "$2" "$3")"
  while "${NM_IPT[@]}" -D "$chain" "${rule[@]}" 2>/dev/null; do :; done
}

# nm_firewall_prune BRIDGE GATEWAY [SKIP_PORT]: takes back the accept rule of every port where
# no netmonitor answers (its proxy stopped, died or was killed). SKIP_PORT is known to be up.
nm_firewall_prune() {
  local p
  nm_firewall_tools || return 0
  for p in $(nm_firewall_ports "$1" "$2"); do
    [ "$p" != "${3:-}" ] || continue
    nm_is_netmonitor "$2" "$p" || nm_firewall_close_port "$1" "$2" "$p"
  done
}

# nm_firewall_remove BRIDGE: removes what nm_firewall_apply added; quiet when nothing is there.
# (IPv6 switched off on the bridge stays off: the bridge goes away with the network.)
nm_firewall_remove() {
  local bridge=$1 chain
  chain=$(nm_firewall_chain "$bridge")
  nm_firewall_tools || return 0
  local rule
  while rule=$("${NM_IPT[@]}" -S INPUT 2>/dev/null | grep -m 1 -- "-j $chain\$") && [ -n "$rule" ]; do
    # shellcheck disable=SC2086  # the rule's words, as iptables -S printed them
    "${NM_IPT[@]}" -D ${rule#-A } 2>/dev/null || break
  done
  "${NM_IPT[@]}" -F "$chain" 2>/dev/null || true
  "${NM_IPT[@]}" -X "$chain" 2>/dev/null || true
  local dir
  for dir in -i -o; do
    while "${NM_IPT[@]}" -D FORWARD "$dir" "$bridge" -j REJECT 2>/dev/null; do :; done
  done
  if [ "${#NM_IP6T[@]}" -gt 0 ]; then
    for chain in INPUT FORWARD; do
      while "${NM_IP6T[@]}" -D "$chain" -i "$bridge" -j REJECT 2>/dev/null; do :; done
    done
  fi
}
