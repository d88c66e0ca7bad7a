/**
 * What `netmonitor run` says about who can use the proxy at its listening
 * address: nothing on loopback, a note naming the bridge on a container
 * bridge's own address (docker/run-monitored.sh's gateway), the warning
 * everywhere else.
 */
import assert from "node:assert/strict";
import { listenNotice } from "../../cli/_listen_notice.ts";

const HOST = [
  { name: "lo", address: "127.0.0.1" },
  { name: "lo", address: "::1" },
  { name: "eth0", address: "192.168.1.20" },
  { name: "eth0", address: "2001:db8::20" },
  { name: "docker0", address: "172.17.0.1" },
  { name: "br-0123456789ab", address: "172.18.0.1" },
  { name: "br-0123456789ab", address: "fd00:dead::1" },
  { name: "podman0", address: "10.88.0.1" },
  { name: "cni-podman0", address: "10.89.0.1" },
  { name: "mybridge", address: "172.30.0.1" },
  { name: "br-notadockerid", address: "172.31.0.1" },
];

const WARNING = (listen: string) => ({
  warning: true,
  text: `listening on ${listen}: every machine that can reach this address can use the proxy`,
});

Deno.test("listen notice: loopback says nothing", () => {
  for (const listen of ["127.0.0.1", "127.0.0.5", "::1"]) {
    assert.equal(listenNotice(listen, HOST), undefined, listen);
  }
});

Deno.test("listen notice: a container bridge's own address names the bridge, not every machine", () => {
  for (
    const [listen, bridge] of [
      ["172.18.0.1", "br-0123456789ab"],
      ["172.17.0.1", "docker0"],
      ["10.88.0.1", "podman0"],
      ["10.89.0.1", "cni-podman0"],
      ["fd00:dead:0:0::1", "br-0123456789ab"], // another spelling of the bridge's IPv6 address
    ]
  ) {
    const notice = listenNotice(listen, HOST);
    assert.deepEqual(notice, {
      warning: false,
      text: `The proxy's address ${listen} belongs to the container bridge ${bridge}: the ` +
        `containers on its network and this host can use the proxy; other containers and ` +
        `machines that can send to ${listen} can too, unless a firewall refuses them ` +
        `(docker/run-monitored.sh adds one)`,
    }, listen);
  }
});

Deno.test("listen notice: every other address keeps the warning", () => {
  for (
    const listen of [
      "192.168.1.20", // eth0: the LAN
      "2001:db8::20",
      "0.0.0.0", // every address, external ones included
      "::",
      "172.30.0.1", // a bridge that is not a container engine's (or renamed)
      "172.31.0.1",
      "172.18.0.2", // in the bridge's subnet, but not its address
      "203.0.113.7", // not an address of this host at all
    ]
  ) {
    assert.deepEqual(listenNotice(listen, HOST), WARNING(listen), listen);
  }
});

Deno.test("listen notice: a bridge address that another interface holds too, or unread interfaces, warn", () => {
  const shared = [...HOST, { name: "eth1", address: "172.18.0.1" }];
  assert.deepEqual(listenNotice("172.18.0.1", shared), WARNING("172.18.0.1"));
  assert.deepEqual(listenNotice("172.18.0.1", []), WARNING("172.18.0.1"));
});
