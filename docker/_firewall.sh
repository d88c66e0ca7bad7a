#!/usr/bin/env bash
# Host firewall for the netmonitor Docker network. Sourced by run-monitored.sh, never run.
# shellcheck shell=bash
#
# Docker's `--internal` networks drop forwarded traffic, but a container still reaches every
# service of the host itself (packets to the gateway or to any host address take the INPUT
# path, which Docker leaves open). These rules close that: from the network's bridge, only the
# proxy port on the gateway is accepted; everything else gets a reset or an ICMP error, so
# clients fail fast. The gateway address answers only the host itself (not other containers,
# not other machines). IPv6 from the bridge is refused entirely (the proxy listens on IPv4).
# One chain per bridge, NETMONITOR-<bridge>, jumped to from INPUT.

# Fills NM_IPT/NM_IP6T with the commands to use, or returns 1 when we cannot change the firewall.
nm_firewall_tools() {
  local prefix=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      prefix=(sudo -n)
    else
      return 1
    fi
  fi
  command -v iptables >/dev/null 2>&1 || return 1
  NM_IPT=("${prefix[@]}" iptables -w)
  NM_IP6T=()
  if command -v ip6tables >/dev/null 2>&1; then
    NM_IP6T=("${prefix[@]}" ip6tables -w)
  fi
}

# The chain that holds one bridge's rules (iptables limits names to 28 characters).
nm_firewall_chain() {
  printf 'NETMONITOR-%s\n' "${1:0:17}"
}

# nm_firewall_apply BRIDGE GATEWAY PORT: idempotent; one more PORT adds one more accept rule.
nm_firewall_apply() {
  local bridge=$1 gateway=$2 port=$3 chain
  chain=$(nm_firewall_chain "$bridge")
  nm_firewall_tools || return 1
  if ! "${NM_IPT[@]}" -S "$chain" >/dev/null 2>&1; then
    "${NM_IPT[@]}" -N "$chain" || return 1
    # Replies to connections already accepted.
    "${NM_IPT[@]}" -A "$chain" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT &&
      # From the container network: nothing but the proxy port(s), inserted above these.
      "${NM_IPT[@]}" -A "$chain" -i "$bridge" -p tcp -j REJECT --reject-with tcp-reset &&
      "${NM_IPT[@]}" -A "$chain" -i "$bridge" -j REJECT --reject-with icmp-admin-prohibited &&
      # To the gateway address from anywhere else: only the host itself (other containers,
      # other machines must not use this proxy or anything else listening there).
      "${NM_IPT[@]}" -A "$chain" -m addrtype --src-type LOCAL -j RETURN &&
      "${NM_IPT[@]}" -A "$chain" -p tcp -j REJECT --reject-with tcp-reset &&
      "${NM_IPT[@]}" -A "$chain" -j REJECT --reject-with icmp-admin-prohibited || return 1
  fi
  if ! "${NM_IPT[@]}" -C "$chain" -i "$bridge" -p tcp -d "$gateway" --dport "$port" -j ACCEPT 2>/dev/null; then
    "${NM_IPT[@]}" -I "$chain" 2 -i "$bridge" -p tcp -d "$gateway" --dport "$port" -j ACCEPT || return 1
  fi
  if ! "${NM_IPT[@]}" -C INPUT -i "$bridge" -j "$chain" 2>/dev/null; then
    "${NM_IPT[@]}" -I INPUT 1 -i "$bridge" -j "$chain" || return 1
  fi
  if ! "${NM_IPT[@]}" -C INPUT -d "$gateway" -j "$chain" 2>/dev/null; then
    "${NM_IPT[@]}" -I INPUT 2 -d "$gateway" -j "$chain" || return 1
  fi
  if [ "${#NM_IP6T[@]}" -gt 0 ]; then
    "${NM_IP6T[@]}" -C INPUT -i "$bridge" -j REJECT 2>/dev/null ||
      "${NM_IP6T[@]}" -I INPUT 1 -i "$bridge" -j REJECT 2>/dev/null || true
  fi
}

# nm_firewall_remove BRIDGE: removes what nm_firewall_apply added; quiet when nothing is there.
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
    while "${NM_IP6T[@]}" -D INPUT -i "$bridge" -j REJECT 2>/dev/null; do :; done
  fi
}
