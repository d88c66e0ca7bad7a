#!/usr/bin/env bash
# Host firewall for the netmonitor Docker network. Sourced by run-monitored.sh, never run.
# shellcheck shell=bash
#
# Docker's `--internal` networks drop forwarded traffic, but a container still reaches every
# service of the host itself (packets to the gateway or to any host address take the INPUT
# path, which Docker leaves open). These rules close that: from the network's bridge, only the
# proxy port on the gateway is accepted; everything else gets a reset or an ICMP error, so
# clients fail fast. The gateway address answers only the host itself (not other containers,
# not other machines). One chain per bridge, NETMONITOR-<bridge>, jumped to from INPUT.
#
# IPv6 from the bridge is refused entirely (the proxy listens on IPv4). Docker turns IPv6 off
# inside the container, but the host's side of the bridge keeps a link-local address, which a
# container with NET_ADMIN, or one that writes raw frames (NET_RAW, a default capability), can
# reach. With ip6tables, INPUT and FORWARD reject the bridge; without it (or when it fails), the
# host's IPv6 is switched off on the bridge; when neither works, the rules are not applied.

# Why the last nm_firewall_apply failed, for the caller's error message.
NM_FIREWALL_ERROR=""

# Fills NM_ROOT (empty, or sudo -n), NM_IPT and NM_IP6T (empty when ip6tables is missing);
# returns 1, with NM_FIREWALL_ERROR set, when we cannot change the firewall.
nm_firewall_tools() {
  NM_ROOT=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      NM_ROOT=(sudo -n)
    else
      NM_FIREWALL_ERROR="changing the firewall needs root or passwordless sudo"
      return 1
    fi
  fi
  if ! command -v iptables >/dev/null 2>&1; then
    NM_FIREWALL_ERROR="iptables is not installed (apt-get install iptables)"
    return 1
  fi
  NM_IPT=("${NM_ROOT[@]}" iptables -w)
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
    [ -n "$ip6_error" ] || return 0
  else
    ip6_error="ip6tables is not installed"
  fi
  nm_ipv6_on "$bridge" || return 0
  printf '1\n' | "${NM_ROOT[@]}" tee "/proc/sys/net/ipv6/conf/$bridge/disable_ipv6" >/dev/null 2>&1
  if nm_ipv6_on "$bridge"; then
    NM_FIREWALL_ERROR="cannot refuse IPv6 from $bridge: $ip6_error, and switching IPv6 off on $bridge failed"
    return 1
  fi
  nm_warn "$ip6_error; IPv6 is switched off on $bridge instead"
}

# nm_firewall_apply BRIDGE GATEWAY PORT: idempotent; one more PORT adds one more accept rule.
# Returns 1 with NM_FIREWALL_ERROR set when any part could not be applied.
nm_firewall_apply() {
  local bridge=$1 gateway=$2 port=$3 chain
  NM_FIREWALL_ERROR=""
  chain=$(nm_firewall_chain "$bridge")
  nm_firewall_tools || return 1
  if ! "${NM_IPT[@]}" -S "$chain" >/dev/null 2>&1; then
    nm_fw "${NM_IPT[@]}" -N "$chain" || return 1
    # Replies to connections already accepted.
    nm_fw "${NM_IPT[@]}" -A "$chain" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT &&
      # From the container network: nothing but the proxy port(s), inserted above these.
      nm_fw "${NM_IPT[@]}" -A "$chain" -i "$bridge" -p tcp -j REJECT --reject-with tcp-reset &&
      nm_fw "${NM_IPT[@]}" -A "$chain" -i "$bridge" -j REJECT --reject-with icmp-admin-prohibited &&
      # To the gateway address from anywhere else: only the host itself (other containers,
      # other machines must not use this proxy or anything else listening there).
      nm_fw "${NM_IPT[@]}" -A "$chain" -m addrtype --src-type LOCAL -j RETURN &&
      nm_fw "${NM_IPT[@]}" -A "$chain" -p tcp -j REJECT --reject-with tcp-reset &&
      nm_fw "${NM_IPT[@]}" -A "$chain" -j REJECT --reject-with icmp-admin-prohibited || return 1
  fi
  if ! "${NM_IPT[@]}" -C "$chain" -i "$bridge" -p tcp -d "$gateway" --dport "$port" -j ACCEPT 2>/dev/null; then
    nm_fw "${NM_IPT[@]}" -I "$chain" 2 -i "$bridge" -p tcp -d "$gateway" --dport "$port" -j ACCEPT || return 1
  fi
  if ! "${NM_IPT[@]}" -C INPUT -i "$bridge" -j "$chain" 2>/dev/null; then
    nm_fw "${NM_IPT[@]}" -I INPUT 1 -i "$bridge" -j "$chain" || return 1
  fi
  if ! "${NM_IPT[@]}" -C INPUT -d "$gateway" -j "$chain" 2>/dev/null; then
    nm_fw "${NM_IPT[@]}" -I INPUT 2 -d "$gateway" -j "$chain" || return 1
  fi
  nm_firewall_ipv6 "$bridge"
}

# nm_firewall_close_port BRIDGE GATEWAY PORT: takes back PORT's accept rule, for a network that
# stays when its proxy stopped (whatever listens there later must not be open to the container).
nm_firewall_close_port() {
  local chain
  chain=$(nm_firewall_chain "$1")
  nm_firewall_tools || return 0
  while "${NM_IPT[@]}" -D "$chain" -i "$1" -p tcp -d "$2" --dport "$3" -j ACCEPT 2>/dev/null; do :; done
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
  if [ "${#NM_IP6T[@]}" -gt 0 ]; then
    for chain in INPUT FORWARD; do
      while "${NM_IP6T[@]}" -D "$chain" -i "$bridge" -j REJECT 2>/dev/null; do :; done
    done
  fi
}
