/**
 * What `netmonitor run` says, once it listens, about who can use the proxy
 * at its address. Pure: the caller reads the interfaces and prints.
 *
 * @module
 */

import { classifyAddress, containerBridgeOf, type InterfaceAddress } from "../lib/net/guard.ts";

/** A line about the listening address: a warning, or a plain note. */
export interface ListenNotice {
  /** Print it as a warning: machines beyond this host may use the proxy. */
  warning: boolean;
  text: string;
}

/**
 * The line for a proxy listening on `listen` (an IP literal, no brackets),
 * given this host's interface addresses; undefined on loopback, which only
 * this host reaches.
 *
 * A container bridge's own address (where docker/run-monitored.sh puts the
 * proxy) is meant for that network's containers, so the line says so instead
 * of warning about every machine. It stays honest about the rest: Linux
 * accepts a packet for any of its addresses on any interface, so other
 * containers and machines that route to the address reach it too, unless a
 * firewall (run-monitored.sh's) refuses them. Any other address, the
 * wildcards included, gets the warning.
 */
export function listenNotice(
  listen: string,
  interfaces: readonly InterfaceAddress[],
): ListenNotice | undefined {
  if (classifyAddress(listen) === "loopback") return undefined;
  const bridge = containerBridgeOf(listen, interfaces);
  if (bridge === undefined) {
    return {
      warning: true,
      text: `listening on ${listen}: every machine that can reach this address can use the proxy`,
    };
  }
  return {
    warning: false,
    text: `The proxy's address ${listen} belongs to the container bridge ${bridge}: the ` +
      `containers on its network and this host can use the proxy; other containers and ` +
      `machines that can send to ${listen} can too, unless a firewall refuses them ` +
      `(docker/run-monitored.sh adds one)`,
  };
}
