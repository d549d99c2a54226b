/**
 * `--only rootless`: a run and an exec through a rootless containerd (`ctrexec rootless start`, as a throwaway
 * user) against the root daemon, alternating in rounds; and the CLI as a whole process, where rootless adds the
 * re-execution into the daemon's namespaces.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { ContainerdExecutor } from "../src/executor/executor.js";
import { createRootlessUser, type RootlessUser } from "../test/helpers/rootless.js";
import { runExecProbe } from "./run-exec-probe.js";

export interface RootlessBenchOptions {
  namespace: string;
  stateDir: string;
  rootfs: string;
  rounds: number;
  perRound: number;
  results: Record<string, unknown>;
  table: string[][];
  median: (xs: number[]) => number;
  summary: (xs: number[]) => unknown;
}

const r1 = (n: number) => Math.round(n * 10) / 10;

/** A whole CLI process, as root or as the user (spawned with its ids: no runuser in the time). */
async function cliProcess(argv: string[], env: NodeJS.ProcessEnv, ids?: { uid: number; gid: number; cwd: string }): Promise<number> {
  const t = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, argv, { stdio: ["ignore", "ignore", "pipe"], env, ...(ids ?? {}) });
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`ctrexec failed (${code}): ${err}`))));
  });
  return performance.now() - t;
}

async function rootlessRound(user: RootlessUser, runs: number, execs: number): Promise<{ run: number[]; exec: number[]; cpuMsPerRun: number }> {
  const child = join(user.app, "dist/bench/rootless-child.js");
  const arg = JSON.stringify({ runs, execs, namespace: "bench-rootless" });
  const r = await user.ctrexec(["rootless", "enter", "--", process.execPath, child, arg], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`rootless bench child failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as { run: number[]; exec: number[]; cpuMsPerRun: number };
}

export async function benchRootless(o: RootlessBenchOptions): Promise<void> {
  const user = await createRootlessUser();
  try {
    const start = await user.ctrexec(["rootless", "start", "--network", "host"], { timeoutMs: 60_000 });
    if (start.code !== 0) throw new Error(`ctrexec rootless start failed: ${start.stderr}`);
    const ex = await ContainerdExecutor.create({
      namespace: o.namespace,
      root: o.stateDir,
      fifoRoot: join(o.stateDir, "fifo"),
      defaultNetwork: "host",
    });
    const probe = runExecProbe(ex, o.rootfs);
    await probe.run();
    await probe.exec();

    const bin = join(user.app, "dist/src/cli/ctrexec.mjs");
    const userIds = { uid: user.uid, gid: user.gid, cwd: user.home };
    const cliArgs = ["run", "--rm", "--network", "host", "--", "/bin/true"];
    const rootCli = [
      bin,
      "--namespace",
      o.namespace,
      "--root",
      o.stateDir,
      "run",
      "--rm",
      "--network",
      "host",
      "--rootfs",
      o.rootfs,
      "--",
      "/bin/true",
    ];
    const rootEnv = { ...process.env, CTREXEC_FIFO_ROOT: join(o.stateDir, "fifo") };
    await cliProcess([bin, ...cliArgs], user.env(), userIds);

    const rootRun: number[] = [];
    const rootExec: number[] = [];
    const rlRun: number[] = [];
    const rlExec: number[] = [];
    const rlCpu: number[] = [];
    const rootCliMs: number[] = [];
    const rlCliMs: number[] = [];
    let cpu = 0;
    for (let round = 0; round < o.rounds; round++) {
      const cpu0 = process.cpuUsage();
      for (let i = 0; i < o.perRound; i++) rootRun.push(await probe.run());
      const d = process.cpuUsage(cpu0);
      cpu += d.user + d.system;
      for (let i = 0; i < o.perRound; i++) rootExec.push(await probe.exec());
      const rl = await rootlessRound(user, o.perRound, o.perRound);
      rlRun.push(...rl.run);
      rlExec.push(...rl.exec);
      rlCpu.push(rl.cpuMsPerRun);
      for (let i = 0; i < 2; i++) {
        rootCliMs.push(await cliProcess(rootCli, rootEnv));
        rlCliMs.push(await cliProcess([bin, ...cliArgs], user.env(), userIds));
      }
    }
    await probe.stop();
    await ex.close();
    const m = o.median;
    const rootCpu = cpu / 1000 / (o.rounds * o.perRound);
    o.results["rootless"] = {
      root_run: o.summary(rootRun),
      rootless_run: o.summary(rlRun),
      root_exec: o.summary(rootExec),
      rootless_exec: o.summary(rlExec),
      root_executor_cpu_ms_per_run: r1(rootCpu),
      rootless_executor_cpu_ms_per_run: r1(m(rlCpu)),
      root_cli_run: o.summary(rootCliMs),
      rootless_cli_run: o.summary(rlCliMs),
    };
    const line = (name: string, root: number[], rl: number[]) =>
      o.table.push([name, `${r1(m(rl))} ms`, "-", "-", "-", "-", `${(m(rl) / m(root)).toFixed(2)}x root (${r1(m(root))} ms)`]);
    line("rootless: run /bin/true (ms)", rootRun, rlRun);
    line("rootless: exec /bin/true (ms)", rootExec, rlExec);
    o.table.push(["rootless: executor CPU per run", `${r1(m(rlCpu))} ms`, "-", "-", "-", "-", `root ${r1(rootCpu)} ms`]);
    line("rootless: CLI run /bin/true, whole process (ms)", rootCliMs, rlCliMs);
  } finally {
    await user.ctrexec(["rootless", "stop"], { timeoutMs: 60_000 }).catch(() => undefined);
    await user.dispose();
  }
}
