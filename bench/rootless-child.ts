/**
 * The rootless side of bench/rootless.ts, run as the bench's unprivileged user inside its rootless daemon's
 * namespaces (`ctrexec rootless enter -- node rootless-child.js ROUNDS_JSON`): the executor finds the daemon
 * by itself. Prints one JSON line: run and exec latencies, in ms, and the executor's CPU per run.
 */
import { ContainerdExecutor } from "../src/executor/executor.js";
import { ensureDefaultRootfs } from "../src/rootfs/default-rootfs.js";
import { runExecProbe } from "./run-exec-probe.js";

const { runs, execs, namespace } = JSON.parse(process.argv[2]!) as { runs: number; execs: number; namespace: string };
const ex = await ContainerdExecutor.create({ namespace, defaultNetwork: "host" });
const rootfs = await ensureDefaultRootfs(ex.root);
const probe = runExecProbe(ex, rootfs);
await probe.run();
const run: number[] = [];
const cpu0 = process.cpuUsage();
for (let i = 0; i < runs; i++) run.push(await probe.run());
const cpu = process.cpuUsage(cpu0);

await probe.exec();
const exec: number[] = [];
for (let i = 0; i < execs; i++) exec.push(await probe.exec());
await probe.stop();
await ex.close();
process.stdout.write(`${JSON.stringify({ run, exec, cpuMsPerRun: (cpu.user + cpu.system) / 1000 / runs })}\n`);
