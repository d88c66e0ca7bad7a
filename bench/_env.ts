/**
 * Facts about the machine a benchmark ran on, for the results header.
 *
 * @module
 */

/** Machine description. */
export interface Machine {
  cpus: number;
  cpuModel: string;
  memGiB: number;
  kernel: string;
  /** 1-minute load average when sampled. */
  load1: number;
}

/** Read nproc, the CPU model, RAM and kernel from /proc. */
export function machine(): Machine {
  let cpuModel = "unknown";
  let cpus = navigator.hardwareConcurrency;
  let memGiB = NaN;
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(info)?.[1].trim() ?? cpuModel;
    cpus = (info.match(/^processor\s*:/gm) ?? []).length || cpus;
  } catch { /* not Linux */ }
  try {
    const kb = Number(/^MemTotal:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/meminfo"))?.[1]);
    memGiB = kb / 1024 / 1024;
  } catch { /* not Linux */ }
  return { cpus, cpuModel, memGiB, kernel: Deno.osRelease(), load1: Deno.loadavg()[0] };
}

/** "2 CPUs (AMD EPYC), 23.5 GiB RAM, Linux 6.1" */
export function describeMachine(m: Machine): string {
  return `${m.cpus} CPUs (${m.cpuModel}), ${m.memGiB.toFixed(1)} GiB RAM, Linux ${m.kernel}`;
}

/** CPU time (user+system, in seconds) used by all processes except idle, since boot. */
export function busyCpuSeconds(): number {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
  return busy / 100; // USER_HZ is 100 on Linux
}

/**
 * CPU seconds (user+system) a process group has used, from /proc/PID/stat of its members,
 * including children they have reaped (socat forks one per connection).
 */
export function groupCpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = statFields(pid);
      // utime stime cutime cstime (fields 14-17)
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch { /* exited */ }
  }
  return ticks / 100;
}

/** CPU seconds (user+system) used by the children this process has waited for (curl, hey...). */
export function reapedChildrenCpuSeconds(): number {
  const f = statFields("self");
  return (Number(f[13]) + Number(f[14])) / 100;
}

/** Fields of /proc/PID/stat after the command name (field 3 is index 0). */
function statFields(pid: number | "self"): string[] {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}
