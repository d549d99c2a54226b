/**
 * The CLI as whole processes (issue #21): `ctrexec --version`, `ps`, `exec` and `run --rm` against `node -e 0`
 * (the floor any Node CLI pays) and ctr's equivalents, wall time and the process's own CPU (user + system of
 * it and its children: containerd's, the shim's and runc's CPU is not the client's). Alternating, the order reversed
 * every other round, so that drift on a shared machine falls on every row alike.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";

export interface CliBenchContext {
  namespace: string;
  stateDir: string;
  rootfs: string;
  rounds: number;
  results: Record<string, unknown>;
  table: string[][];
  median(xs: number[]): number;
  summary(xs: number[]): unknown;
}

interface Sample {
  wall: number;
  cpu: number;
}

/**
 * Runs argv from bash, whose `times` then prints its children's user and system CPU (getrusage, to the
 * millisecond; GNU time's %U/%S stop at 10 ms); the wall time is measured around it, bash's start included
 * alike in every row.
 */
function timed(argv: string[], env: NodeJS.ProcessEnv): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const child = spawn("bash", ["-c", '"$@" >/dev/null 2>&1; rc=$?; times >&2; exit $rc', "bash", ...argv], {
      stdio: ["ignore", "ignore", "pipe"],
      env,
    });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) => {
      const wall = performance.now() - t;
      // Two lines: the shell's own times, then its children's.
      const m = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(err);
      if (code !== 0 || !m) return reject(new Error(`${argv.join(" ")} failed (${code}): ${err}`));
      resolve({ wall, cpu: (Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4])) * 1000 });
    });
  });
}

export async function benchCli(c: CliBenchContext): Promise<void> {
  const bin = new URL("../src/cli/ctrexec.mjs", import.meta.url).pathname;
  const env = { ...process.env, CTREXEC_FIFO_ROOT: join(c.stateDir, "fifo") };
  const ctrexec = (...args: string[]) => [process.execPath, bin, "--namespace", c.namespace, "--root", c.stateDir, ...args];
  const ctr = (...args: string[]) => ["ctr", "-n", c.namespace, ...args];
  // A container to exec into, from each side: ctrexec's and ctr's.
  const target = `cli-bench-${process.pid}`;
  const ctrTarget = `ctr-bench-${process.pid}`;
  const holder = spawn(
    process.execPath,
    [bin, "--namespace", c.namespace, "--root", c.stateDir, "run", "--id", target, "--network", "host", "--rootfs", c.rootfs, "--", "sleep", "600"],
    {
      stdio: "ignore",
      env,
    },
  );
  const ctrHolder = spawn("ctr", ["-n", c.namespace, "run", "--rm", "--rootfs", c.rootfs, ctrTarget, "/bin/sleep", "600"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let ctrErr = "";
  ctrHolder.stderr.on("data", (d: Buffer) => (ctrErr += d.toString()));
  const exited = (child: ReturnType<typeof spawn>) =>
    child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once("exit", r));
  let n = 0;
  const rows: [string, () => string[]][] = [
    ["node -e 0", () => [process.execPath, "-e", "0"]],
    ["ctrexec --version", () => ctrexec("--version")],
    ["ctr --version", () => ["ctr", "--version"]],
    ["ctrexec ps", () => ctrexec("ps")],
    ["ctr task ls", () => ctr("task", "ls")],
    ["ctrexec exec", () => ctrexec("exec", target, "/bin/true")],
    ["ctr task exec", () => ctr("task", "exec", "--exec-id", `e${++n}`, ctrTarget, "/bin/true")],
    ["ctrexec run --rm", () => ctrexec("run", "--rm", "--network", "host", "--rootfs", c.rootfs, "--", "/bin/true")],
    ["ctr run --rm", () => ctr("run", "--rm", "--rootfs", c.rootfs, `ctr-run-${process.pid}-${++n}`, "/bin/true")],
  ];
  const samples = new Map<string, Sample[]>(rows.map(([name]) => [name, []]));
  try {
    // Both holders running: their exec targets answer.
    for (let i = 0; i < 100; i++) {
      const ok = await Promise.all([
        timed(ctrexec("exec", target, "/bin/true"), env),
        timed(ctr("task", "exec", "--exec-id", `w${i}`, ctrTarget, "/bin/true"), env),
      ]).then(
        () => true,
        () => false,
      );
      if (ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const [, argv] of rows) await timed(argv(), env); // warm-up: page cache, the code cache
    for (let round = 0; round < c.rounds; round++) {
      const order = round % 2 === 0 ? rows : [...rows].reverse();
      for (const [name, argv] of order) samples.get(name)!.push(await timed(argv(), env));
    }
  } finally {
    // The containers' init (sleep as pid 1) ignores what it has no handler for: SIGKILL, from each side's CLI.
    await timed(ctrexec("kill", target), env).catch(() => {});
    await timed(ctr("task", "kill", "-s", "SIGKILL", ctrTarget), env).catch(() => {});
    await Promise.all([exited(holder), exited(ctrHolder)]);
  }
  const med = (name: string, k: keyof Sample) => c.median(samples.get(name)!.map((s) => s[k]));
  c.results["cli"] = Object.fromEntries(
    rows.map(([name]) => [name, { wall: c.summary(samples.get(name)!.map((s) => s.wall)), cpu: c.summary(samples.get(name)!.map((s) => s.cpu)) }]),
  );
  const pairs: [string, string][] = [
    ["ctrexec --version", "ctr --version"],
    ["ctrexec ps", "ctr task ls"],
    ["ctrexec exec", "ctr task exec"],
    ["ctrexec run --rm", "ctr run --rm"],
  ];
  const floor = { wall: med("node -e 0", "wall"), cpu: med("node -e 0", "cpu") };
  c.table.push(["CLI whole process (wall / CPU ms)", "ctrexec", "ctr", "node -e 0", "", "vs node", "ctrexec/ctr"]);
  for (const [ours, theirs] of pairs) {
    const w = med(ours, "wall");
    const u = med(ours, "cpu");
    c.table.push([
      `  ${ours.replace("ctrexec ", "")}`,
      `${w.toFixed(1)} / ${u.toFixed(1)}`,
      `${med(theirs, "wall").toFixed(1)} / ${med(theirs, "cpu").toFixed(1)}`,
      `${floor.wall.toFixed(1)} / ${floor.cpu.toFixed(1)}`,
      "",
      `${(w / floor.wall).toFixed(2)} / ${(u / floor.cpu).toFixed(2)}`,
      `${(w / med(theirs, "wall")).toFixed(2)} / ${(u / med(theirs, "cpu")).toFixed(2)}`,
    ]);
  }
}
