/**
 * netmonitor: network monitor and egress firewall for Docker development
 * containers. `deno run -A main.ts --help`.
 * @module
 */

import { main } from "./cli/mod.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
