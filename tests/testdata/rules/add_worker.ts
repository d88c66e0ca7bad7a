// Test helper process: adds `count` rules "<prefix>-<i>.test" to the rules file,
// all at once, to race with another process doing the same.
// Usage: deno run -A add_worker.ts <rules-file> <prefix> <count>
import { RulesStore } from "../../../lib/rules/mod.ts";

const [path, prefix, count] = Deno.args;
const store = new RulesStore(path);
await Promise.all(
  Array.from({ length: Number(count) }, (_, i) => store.add(`${prefix}-${i}.test`, "allow")),
);
