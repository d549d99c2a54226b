/**
 * The rootless side of bench/rootless.ts, run as the bench's unprivileged user inside its rootless daemon's
 * namespaces (`ctrexec rootless enter -- node rootless-child.js ROUNDS_JSON`): the executor finds the daemon
 * by itself. Prints one JSON line: run and exec latencies, in ms, and the executor's CPU per run.
 */
import { Writable } from "node:stream";
import { ContainerdExecutor } from "../src/executor/executor.js";
import { bindMountable } from "../src/executor/mountables.js";
import { ensureDefaultRootfs } from "../src/rootfs/default-rootfs.js";

class Discard extends Writable {
  override _write(_c: Buffer, _e: BufferEncoding, cb: () => void): void {
    cb();
  }
}

const { runs, execs, namespace } = JSON.parse(process.argv[2]!) as { runs: number; execs: number; namespace: string };
const ex = await ContainerdExecutor.create({ namespace, defaultNetwork: "host" });
const rootfs = await ensureDefaultRootfs(ex.root);
const root = () => ({ source: bindMountable(rootfs) });
const once = async (args: string[]) => {
  const t = performance.now();
  await ex.run({ root: root(), process: { meta: { args }, stdout: new Discard(), stderr: new Discard() } });
  return performance.now() - t;
};
await once(["/bin/true"]);
const run: number[] = [];
const cpu0 = process.cpuUsage();
for (let i = 0; i < runs; i++) run.push(await once(["/bin/true"]));
const cpu = process.cpuUsage(cpu0);

const ac = new AbortController();
let started!: (id: string) => void;
const s = new Promise<string>((r) => (started = r));
const long = ex
  .run({ root: root(), process: { meta: { args: ["sleep", "600"] } }, signal: ac.signal, onStarted: ({ id }) => started(id) })
  .catch(() => {});
const id = await s;
await ex.exec(id, { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() });
const exec: number[] = [];
for (let i = 0; i < execs; i++) {
  const t = performance.now();
  await ex.exec(id, { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() });
  exec.push(performance.now() - t);
}
ac.abort();
await long;
await ex.close();
process.stdout.write(`${JSON.stringify({ run, exec, cpuMsPerRun: (cpu.user + cpu.system) / 1000 / runs })}\n`);
