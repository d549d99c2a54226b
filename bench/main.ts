/**
 * ctrexec benchmark suite: `npm run bench` (or `node dist/bench/main.js [--quick] [--json FILE] [--only a,b]`).
 *
 * Every scenario runs ctrexec in-process beside `ctr run --rm` (a whole process), `runc run` on a prepared bundle
 * (the floor) and, when built, containerd's own Go client (../shared/bench/go-anchor), alternating in rounds so
 * that a noisy machine hurts them alike. Reports medians, p95 and ratios as a table, and everything as JSON.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { promisify } from "node:util";
import type { Attributes, Span, Tracer } from "@opentelemetry/api";
import { ContainerdExecutor, type ExecutorOptions } from "../src/executor/executor.js";
import { bindMountable } from "../src/executor/mountables.js";
import type { ProcessMeta } from "../src/executor/types.js";
import { imageMountable } from "../src/image/mountables.js";
import { resolveImage } from "../src/image/resolve.js";
import { DEFAULT_IPAM_DIR } from "../src/network/bridge.js";
import { ensureDefaultRootfs } from "../src/rootfs/default-rootfs.js";
import { removeRuntimeNamespaceDirs } from "../test/helpers/env.js";
import { treeEntries, writeOciArchive } from "../test/helpers/oci-image.js";
import { benchCli } from "./cli.js";
import { benchLoad } from "./load.js";
import { benchPull, pullRssChild } from "./pull.js";
import { benchRootless } from "./rootless.js";

const exec = promisify(execFile);
const args = process.argv.slice(2);
const quick = args.includes("--quick");
const only = args.includes("--only") ? new Set(args[args.indexOf("--only") + 1]!.split(",")) : undefined;
const jsonOut = args.includes("--json") ? args[args.indexOf("--json") + 1] : undefined;
const GO_ANCHOR = process.env["CTREXEC_GO_ANCHOR"] ?? "/tmp/go-anchor";
const ROUNDS = quick ? 3 : 6;
const PER_ROUND = quick ? 3 : 5;

const NS = args[0] === "--rss-child" ? args[1]! : `ctrexec-bench-${process.pid}`;
let stateDir = "";
let rootfs = "";
let bundle = "";
const results: Record<string, unknown> = {};
const rssAfter: Record<string, number> = {};
const table: string[][] = [["scenario", "ctrexec", "ctr", "runc", "go client", "ctrexec/go", "ctrexec/ctr"]];

// ---------------------------------------------------------------- statistics

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
}
const median = (xs: number[]) => quantile(xs, 0.5);
const r1 = (n: number) => Math.round(n * 10) / 10;
function summary(xs: number[]) {
  return { n: xs.length, median: r1(median(xs)), p95: r1(quantile(xs, 0.95)), min: r1(Math.min(...xs)), max: r1(Math.max(...xs)) };
}

class Discard extends Writable {
  bytes = 0;
  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    this.bytes += chunk.length;
    cb();
  }
}

// ---------------------------------------------------------------- the other columns

async function ctrRun(argv: string[], stdout: "ignore" | "count" = "ignore"): Promise<{ ms: number; bytes: number }> {
  const id = `ctr${process.pid}${Math.random().toString(36).slice(2, 8)}`;
  const t = performance.now();
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    const child = spawn("ctr", ["-n", NS, "run", "--rm", "--rootfs", rootfs, id, ...argv], {
      stdio: ["ignore", stdout === "count" ? "pipe" : "ignore", "pipe"],
    });
    child.stdout?.on("data", (d: Buffer) => (bytes += d.length));
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`ctr run failed (${code}): ${err}`))));
  });
  return { ms: performance.now() - t, bytes };
}

/** ctrexec's own CLI as a whole process, for callers in other languages (`ctrexec run --rm`, like ctr's column). */
async function cliRun(argv: string[]): Promise<number> {
  const bin = new URL("../src/cli/ctrexec.mjs", import.meta.url).pathname;
  const t = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [bin, "--namespace", NS, "--root", stateDir, "run", "--rm", "--network", "host", "--rootfs", rootfs, ...argv],
      {
        stdio: ["ignore", "ignore", "pipe"],
        env: { ...process.env, CTREXEC_FIFO_ROOT: join(stateDir, "fifo") },
      },
    );
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`ctrexec run failed (${code}): ${err}`))));
  });
  return performance.now() - t;
}

async function prepareBundle(): Promise<void> {
  bundle = join(stateDir, "runc-bundle");
  await mkdir(bundle, { recursive: true });
  await exec("runc", ["spec", "--bundle", bundle]);
  const { readFile } = await import("node:fs/promises");
  const conf = JSON.parse(await readFile(join(bundle, "config.json"), "utf8")) as Record<string, Record<string, unknown>>;
  conf["root"] = { path: rootfs, readonly: false };
  conf["process"]!["terminal"] = false;
  await writeFile(join(bundle, "config.json"), JSON.stringify(conf));
}

async function runcRun(argv: string[], stdout: "ignore" | "count" = "ignore", spec?: string): Promise<{ ms: number; bytes: number }> {
  const { readFile } = await import("node:fs/promises");
  const conf = JSON.parse(spec ?? (await readFile(join(bundle, "config.json"), "utf8"))) as Record<string, Record<string, unknown>>;
  conf["process"]!["args"] = argv;
  const b = await mkdtemp(join(stateDir, "runc-"));
  await writeFile(join(b, "config.json"), JSON.stringify(conf));
  const id = `runc${process.pid}${Math.random().toString(36).slice(2, 8)}`;
  const t = performance.now();
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    const child = spawn("runc", ["--root", join(stateDir, "runc-state"), "run", "-b", b, id], {
      stdio: ["ignore", stdout === "count" ? "pipe" : "ignore", "pipe"],
    });
    child.stdout?.on("data", (d: Buffer) => (bytes += d.length));
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`runc run failed (${code}): ${err}`))));
  });
  const ms = performance.now() - t;
  await rm(b, { recursive: true, force: true });
  return { ms, bytes };
}

const haveGo = existsSync(GO_ANCHOR);
async function goAnchor(mode: string, extra: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await exec(GO_ANCHOR, [mode, "-namespace", NS, "-rootfs", rootfs, "-seccomp", ...extra], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as Record<string, unknown>;
}

// ---------------------------------------------------------------- ctrexec

async function newExecutor(extra: Partial<ExecutorOptions> = {}): Promise<ContainerdExecutor> {
  return ContainerdExecutor.create({ namespace: NS, root: stateDir, fifoRoot: join(stateDir, "fifo"), defaultNetwork: "host", ...extra });
}
const root = () => ({ source: bindMountable(rootfs) });

async function timed(ex: ContainerdExecutor, meta: ProcessMeta, streams = true): Promise<number> {
  const t = performance.now();
  await ex.run({ root: root(), process: { meta, ...(streams ? { stdout: new Discard(), stderr: new Discard() } : {}) } });
  return performance.now() - t;
}

function ratio(a: number, b: number | undefined): string {
  return b && Number.isFinite(b) ? (a / b).toFixed(2) : "-";
}

function row(name: string, unit: string, c: number, ctr?: number, runc?: number, go?: number, higherIsBetter = false) {
  const fmt = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? "-" : `${r1(v)} ${unit}`);
  const rel = (x: number | undefined) => (higherIsBetter ? ratio(x ?? NaN, c) : ratio(c, x));
  table.push([
    name,
    fmt(c),
    fmt(ctr),
    fmt(runc),
    fmt(go),
    higherIsBetter ? (go ? ratio(c, go) : "-") : rel(go),
    higherIsBetter ? (ctr ? ratio(c, ctr) : "-") : rel(ctr),
  ]);
}

// ---------------------------------------------------------------- scenarios

async function seqTrue(): Promise<void> {
  const ex = await newExecutor();
  const events: { name: string; t: number }[] = [];
  const phases: Record<string, number[]> = {};
  const span = {
    addEvent: (name: string, _a?: Attributes) => {
      events.push({ name, t: performance.now() });
      return span;
    },
    end: () => {},
  } as unknown as Span;
  const tracer = { startSpan: () => span } as unknown as Tracer;
  const traced = await newExecutor({ tracer });
  const buildkitOrder = await newExecutor({ awaitCleanup: true });
  const noReuse = await newExecutor({ shims: "off" });
  const noLauncher = await newExecutor({ shimLauncher: false });
  const warm = await newExecutor({ shims: { warm: 2 } });
  await timed(warm, { args: ["/bin/true"] });
  // "auto" starts nothing for the first run; the second one grows the pool, one anchor at a time: measure it
  // grown, as the fixed pool.
  const auto = await newExecutor({ shims: { warm: "auto" } });
  for (let i = 0; i < 6; i++) await timed(auto, { args: ["/bin/true"] });
  await auto.settled();
  await new Promise((r) => setTimeout(r, 1000));
  const a: number[] = [];
  const w: number[] = [];
  const bo: number[] = [];
  const nr: number[] = [];
  const nl: number[] = [];
  const c: number[] = [];
  const ctr: number[] = [];
  const runc: number[] = [];
  const go: number[] = [];
  const cli: number[] = [];
  let cpu = 0;
  for (let i = 0; i < 2; i++) await timed(ex, { args: ["/bin/true"] });
  // The floor for the same work: runc run on the spec ctrexec gave runc (seccomp, the cgroup mount, the binds),
  // without its shim group and cgroup path.
  let ours = "";
  await ex.run({
    root: root(),
    process: { meta: { args: ["/bin/true"] } },
    onStarted: ({ id }) => {
      ours = readFileSync(`/run/containerd/io.containerd.runtime.v2.task/${NS}/${id}/config.json`, "utf8");
    },
  });
  const oursSpec = JSON.parse(ours) as { annotations?: unknown; linux: { cgroupsPath?: string }; mounts: { destination: string; source: string }[] };
  delete oursSpec.annotations;
  delete oursSpec.linux.cgroupsPath;
  // The run's own hosts file goes with it: binds of files that stay.
  for (const m of oursSpec.mounts) {
    if (m.destination !== "/etc/hosts" && m.destination !== "/etc/resolv.conf") continue;
    m.source = join(stateDir, `runc-same${m.destination.replaceAll("/", "-")}`);
    await writeFile(m.source, m.destination === "/etc/hosts" ? "127.0.0.1\tlocalhost\n" : "nameserver 127.0.0.1\n");
  }
  const runcSame: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < PER_ROUND; i++) c.push(await timed(ex, { args: ["/bin/true"] }));
    const d = process.cpuUsage(cpu0);
    cpu += d.user + d.system;
    for (let i = 0; i < PER_ROUND; i++) bo.push(await timed(buildkitOrder, { args: ["/bin/true"] }));
    for (let i = 0; i < PER_ROUND; i++) nr.push(await timed(noReuse, { args: ["/bin/true"] }));
    for (let i = 0; i < PER_ROUND; i++) nl.push(await timed(noLauncher, { args: ["/bin/true"] }));
    for (let i = 0; i < PER_ROUND; i++) w.push(await timed(warm, { args: ["/bin/true"] }));
    for (let i = 0; i < PER_ROUND; i++) a.push(await timed(auto, { args: ["/bin/true"] }));
    for (let i = 0; i < PER_ROUND; i++) ctr.push((await ctrRun(["/bin/true"])).ms);
    for (let i = 0; i < PER_ROUND; i++) runc.push((await runcRun(["/bin/true"])).ms);
    for (let i = 0; i < PER_ROUND; i++) runcSame.push((await runcRun(["/bin/true"], "ignore", JSON.stringify(oursSpec))).ms);
    for (let i = 0; i < PER_ROUND; i++) cli.push(await cliRun(["/bin/true"]));
    if (haveGo) go.push(Number(((await goAnchor("seq", ["-n", String(PER_ROUND), "-warmup", "1"]))["latency"] as { median_ms: number }).median_ms));
    // One traced run per round for the phase breakdown.
    events.length = 0;
    const t0 = performance.now();
    await traced.run({ root: root(), process: { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() } });
    const settledAt = performance.now();
    let prev = t0;
    const add = (phase: string, ms: number) => {
      phases[phase] = [...(phases[phase] ?? []), ms];
    };
    for (const e of events) {
      add(e.name, e.t - prev);
      prev = e.t;
    }
    add("run() settled", settledAt - prev);
  }
  const noStreams: number[] = [];
  for (let i = 0; i < PER_ROUND * 2; i++) noStreams.push(await timed(ex, { args: ["/bin/true"] }, false));
  await traced.close();
  await buildkitOrder.close();
  await noReuse.close();
  await noLauncher.close();
  await warm.close();
  await auto.close();
  await ex.close();
  const cpuPerRun = cpu / 1000 / (ROUNDS * PER_ROUND);
  results["seq_true"] = {
    ctrexec: summary(c),
    ctrexec_no_streams: summary(noStreams),
    ctrexec_await_cleanup: summary(bo),
    ctrexec_no_shim_reuse: summary(nr),
    ctrexec_no_shim_launcher: summary(nl),
    ctrexec_warm_shims_2: summary(w),
    ctrexec_warm_shims_auto: summary(a),
    ctr: summary(ctr),
    runc: summary(runc),
    runc_same_spec: summary(runcSame),
    go: haveGo ? summary(go) : null,
    ctrexec_cli: summary(cli),
    executor_cpu_ms_per_run: r1(cpuPerRun),
    phase_median_ms: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, r1(median(v))])),
  };
  row("run /bin/true (ms)", "ms", median(c), median(ctr), median(runc), haveGo ? median(go) : undefined);
  row("  runc column: runc run on ctrexec's own spec (ms)", "ms", median(c), median(ctr), median(runcSame), haveGo ? median(go) : undefined);
  row("  same, no stdio (ms)", "ms", median(noStreams), median(ctr), median(runc), haveGo ? median(go) : undefined);
  row('  same, shims: "off" (ms)', "ms", median(nr), median(ctr), median(runc), haveGo ? median(go) : undefined);
  row("  same, shimLauncher: false (ms)", "ms", median(nl), median(ctr), median(runc), haveGo ? median(go) : undefined);
  row("  same, 2 warm shims (ms)", "ms", median(w), median(ctr), median(runc), haveGo ? median(go) : undefined);
  row('  same, shims: { warm: "auto" } (ms)', "ms", median(a), median(ctr), median(runc), haveGo ? median(go) : undefined);
  row("  same, awaitCleanup (ms)", "ms", median(bo), median(ctr), median(runc), haveGo ? median(go) : undefined);
  table.push(["executor CPU per run", `${r1(cpuPerRun)} ms`, "-", "-", "-", "-", "-"]);
  // The Go column is a library in a running process, so the whole-process comparison is with ctr only.
  table.push([
    "CLI run /bin/true, whole process (ms)",
    `${r1(median(cli))} ms`,
    `${r1(median(ctr))} ms`,
    "-",
    "-",
    "-",
    ratio(median(cli), median(ctr)),
  ]);
}

async function execTrue(): Promise<void> {
  // Span events of each measured exec, for the per-phase breakdown (the run's own span events are dropped).
  let events: { name: string; t: number }[] | undefined;
  const span = {
    addEvent: (name: string, _a?: Attributes) => {
      events?.push({ name, t: performance.now() });
      return span;
    },
    end: () => {},
  } as unknown as Span;
  const ex = await newExecutor({ tracer: { startSpan: () => span } as unknown as Tracer });
  const phases: Record<string, number[]> = {};
  const ac = new AbortController();
  let started!: (id: string) => void;
  const s = new Promise<string>((r) => (started = r));
  const run = ex
    .run({ root: root(), process: { meta: { args: ["sleep", "600"] } }, signal: ac.signal, onStarted: ({ id }) => started(id) })
    .catch(() => {});
  const id = await s;
  const c: number[] = [];
  const ctr: number[] = [];
  const runc: number[] = [];
  const go: number[] = [];
  for (let i = 0; i < 3; i++) await ex.exec(id, { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() });
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < PER_ROUND * 2; i++) {
      events = [];
      const t = performance.now();
      await ex.exec(id, { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() });
      const settledAt = performance.now();
      c.push(settledAt - t);
      let prev = t;
      for (const e of events) {
        phases[e.name] = [...(phases[e.name] ?? []), e.t - prev];
        prev = e.t;
      }
      phases["exec() settled"] = [...(phases["exec() settled"] ?? []), settledAt - prev];
      events = undefined;
    }
    // The floor: runc's own exec into the same container, no shim, no containerd (a whole runc process).
    for (let i = 0; i < PER_ROUND; i++) {
      const t = performance.now();
      await exec("runc", ["--root", `/run/containerd/runc/${NS}`, "exec", id, "/bin/true"]);
      runc.push(performance.now() - t);
    }
    for (let i = 0; i < PER_ROUND; i++) {
      const t = performance.now();
      await exec("ctr", ["-n", NS, "task", "exec", "--exec-id", `e${process.pid}${round}${i}`, id, "/bin/true"]);
      ctr.push(performance.now() - t);
    }
    if (haveGo)
      go.push(Number(((await goAnchor("exec", ["-n", String(PER_ROUND * 2), "-warmup", "2"]))["latency"] as { median_ms: number }).median_ms));
  }
  ac.abort();
  await run;
  await ex.close();
  results["exec_true"] = {
    ctrexec: summary(c),
    ctr_task_exec: summary(ctr),
    runc_exec: summary(runc),
    go: haveGo ? summary(go) : null,
    phase_median_ms: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, r1(median(v))])),
  };
  row("exec /bin/true (ms)", "ms", median(c), median(ctr), median(runc), haveGo ? median(go) : undefined);
}

async function cancel(): Promise<void> {
  const ex = await newExecutor();
  const c: number[] = [];
  const go: number[] = [];
  const one = async () => {
    const ac = new AbortController();
    let started!: () => void;
    const s = new Promise<void>((r) => (started = r));
    const p = ex
      .run({
        root: root(),
        process: { meta: { args: ["sleep", "600"] }, stdout: new Discard(), stderr: new Discard() },
        signal: ac.signal,
        onStarted: () => started(),
      })
      .catch(() => {});
    await s;
    await new Promise((r) => setTimeout(r, 50));
    const t = performance.now();
    ac.abort();
    await p;
    return performance.now() - t;
  };
  await one();
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < PER_ROUND; i++) c.push(await one());
    if (haveGo)
      go.push(Number(((await goAnchor("cancel", ["-n", String(PER_ROUND), "-warmup", "1"]))["cancel_to_return"] as { median_ms: number }).median_ms));
  }
  await ex.close();
  results["cancel_to_return"] = { ctrexec: summary(c), go: haveGo ? summary(go) : null };
  row("cancel → return (ms)", "ms", median(c), undefined, undefined, haveGo ? median(go) : undefined);
}

async function stdout(src: "head" | "dd"): Promise<void> {
  const size = 256 * 1024 * 1024;
  const argv = src === "head" ? ["/bin/head", "-c", String(size), "/dev/zero"] : ["/bin/dd", "if=/dev/zero", "bs=1M", `count=${size >> 20}`];
  const ex = await newExecutor();
  const c: number[] = [];
  const ctr: number[] = [];
  const runc: number[] = [];
  const go: number[] = [];
  // Nine rounds: each column's rate is bound by the writer and the shim's copy, and moves by ±10% with the
  // machine's other load; five gave medians that swapped order between runs.
  const n = quick ? 2 : 9;
  for (let round = 0; round < n; round++) {
    const sink = new Discard();
    const t = performance.now();
    await ex.run({ root: root(), process: { meta: { args: argv }, stdout: sink, stderr: new Discard() } });
    if (sink.bytes !== size) throw new Error(`ctrexec got ${sink.bytes} bytes`);
    c.push(size / 2 ** 20 / ((performance.now() - t) / 1000));
    const cr = await ctrRun(argv, "count");
    ctr.push(size / 2 ** 20 / (cr.ms / 1000));
    const rr = await runcRun(argv, "count");
    runc.push(size / 2 ** 20 / (rr.ms / 1000));
    if (haveGo) go.push(Number((await goAnchor("stdout", ["-n", "1", "-warmup", "0", "-bytes", String(size), "-src", src]))["mib_per_s_median"]));
  }
  await ex.close();
  results[`stdout_256MiB_${src}`] = {
    ctrexec_mib_s: summary(c),
    ctr_mib_s: summary(ctr),
    runc_mib_s: summary(runc),
    go_mib_s: haveGo ? summary(go) : null,
  };
  row(`256 MiB stdout, ${src} (MiB/s)`, "MiB/s", median(c), median(ctr), median(runc), haveGo ? median(go) : undefined, true);
}

async function parallel(conc: number): Promise<void> {
  // The default (shim reuse) in its steady state: the columns alternate for longer than its 10 s idle time, which
  // under continuous load would never pass, so the shims are kept between rounds; a warm-up round founds them.
  const ex = await newExecutor({ shimIdleMs: 120_000 });
  await Promise.all(Array.from({ length: 2 * conc }, () => ex.run({ root: root(), process: { meta: { args: ["/bin/true"] } } })));
  await ex.settled({ keepReusableShims: true });
  const total = quick ? conc * 4 : conc * 8;
  // Every column saturates the CPUs, so throughput is the machine's CPU per run: measured for each column.
  const cpu: Record<"c" | "l" | "n" | "w" | "ctr" | "go", number[]> = { c: [], l: [], n: [], w: [], ctr: [], go: [] };
  const noLauncher = await newExecutor({ shimIdleMs: 120_000, shimLauncher: false });
  await Promise.all(Array.from({ length: 2 * conc }, () => noLauncher.run({ root: root(), process: { meta: { args: ["/bin/true"] } } })));
  await noLauncher.settled({ keepReusableShims: true });
  const noReuse = await newExecutor({ shims: "off" });
  // Twice the concurrency: a shim is busy until its run's task is deleted (see ExecutorOptions.shims).
  const warm = await newExecutor({ shims: { warm: 2 * conc } });
  await Promise.all(Array.from({ length: conc }, () => warm.run({ root: root(), process: { meta: { args: ["/bin/true"] } } })));
  // Measure a full pool, not its filling (anchors start one at a time in the background; settled() waits for them).
  await warm.settled();
  const rate = async (col: "c" | "l" | "n" | "w" | "ctr", f: () => Promise<unknown>, after?: () => Promise<void>) => {
    let next = 0;
    const t = performance.now();
    const c0 = await busyJiffies();
    await Promise.all(
      Array.from({ length: conc }, async () => {
        while (next++ < total) await f();
      }),
    );
    // ctrexec's background deletions are part of its runs' cost.
    await after?.();
    const el = performance.now() - t;
    cpu[col].push((((await busyJiffies()) - c0) * 10) / total);
    return total / (el / 1000);
  };
  const c: number[] = [];
  const l: number[] = [];
  const n: number[] = [];
  const w: number[] = [];
  const ctr: number[] = [];
  const go: number[] = [];
  for (let round = 0; round < (quick ? 2 : 3); round++) {
    c.push(
      await rate(
        "c",
        () => ex.run({ root: root(), process: { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() } }),
        () => ex.settled({ keepReusableShims: true }),
      ),
    );
    l.push(
      await rate(
        "l",
        () => noLauncher.run({ root: root(), process: { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() } }),
        () => noLauncher.settled({ keepReusableShims: true }),
      ),
    );
    n.push(
      await rate(
        "n",
        () => noReuse.run({ root: root(), process: { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() } }),
        () => noReuse.settled(),
      ),
    );
    w.push(
      await rate(
        "w",
        () => warm.run({ root: root(), process: { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() } }),
        () => warm.settled(),
      ),
    );
    ctr.push(await rate("ctr", () => ctrRun(["/bin/true"])));
    if (haveGo) {
      const c0 = await busyJiffies();
      go.push(Number((await goAnchor("par", ["-n", String(total), "-c", String(conc), "-warmup", "2"]))["runs_per_s"]));
      cpu.go.push((((await busyJiffies()) - c0) * 10) / (total + 2));
    }
  }
  await ex.close();
  await noLauncher.close();
  await noReuse.close();
  await warm.close();
  results[`parallel_${conc}`] = {
    ctrexec_runs_s: summary(c),
    ctrexec_no_shim_launcher_runs_s: summary(l),
    ctrexec_no_shim_reuse_runs_s: summary(n),
    ctrexec_warm_shims_runs_s: summary(w),
    ctr_runs_s: summary(ctr),
    go_runs_s: haveGo ? summary(go) : null,
    machine_cpu_ms_per_run: {
      ctrexec: summary(cpu.c),
      ctrexec_no_shim_launcher: summary(cpu.l),
      ctrexec_no_shim_reuse: summary(cpu.n),
      ctrexec_warm_shims: summary(cpu.w),
      ctr: summary(cpu.ctr),
      go: haveGo ? summary(cpu.go) : null,
    },
  };
  row(`${conc}-way parallel, shim reuse in steady state (runs/s)`, "/s", median(c), median(ctr), undefined, haveGo ? median(go) : undefined, true);
  row("  machine CPU per run (ms)", "ms", median(cpu.c), median(cpu.ctr), undefined, haveGo ? median(cpu.go) : undefined);
  row("  same, shimLauncher: false (runs/s)", "/s", median(l), median(ctr), undefined, haveGo ? median(go) : undefined, true);
  row("  machine CPU per run (ms)", "ms", median(cpu.l), median(cpu.ctr), undefined, haveGo ? median(cpu.go) : undefined);
  row('  same, shims: "off" (runs/s)', "/s", median(n), median(ctr), undefined, haveGo ? median(go) : undefined, true);
  row("  machine CPU per run (ms)", "ms", median(cpu.n), median(cpu.ctr), undefined, haveGo ? median(cpu.go) : undefined);
  row(`  same, ${2 * conc} warm shims (runs/s)`, "/s", median(w), median(ctr), undefined, haveGo ? median(go) : undefined, true);
  row("  machine CPU per run (ms)", "ms", median(cpu.w), median(cpu.ctr), undefined, haveGo ? median(cpu.go) : undefined);
}

/** Busy (non-idle) CPU time of the whole machine so far, in jiffies (10 ms). */
async function busyJiffies(): Promise<number> {
  const f = (await readFile("/proc/stat", "utf8")).split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return f.reduce((a, b) => a + b, 0) - (f[3] ?? 0) - (f[4] ?? 0);
}

/** RSS peak of this process while 32 runs of `sleep 3` are in flight. */
async function rssPeak32(): Promise<{ before: number; peak: number; started: number }> {
  const ex = await newExecutor();
  global.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  let startedCount = 0;
  await Promise.all(
    Array.from({ length: 32 }, () =>
      ex.run({
        root: root(),
        process: { meta: { args: ["sleep", "3"] }, stdout: new Discard(), stderr: new Discard() },
        onStarted: () => void startedCount++,
      }),
    ),
  );
  clearInterval(timer);
  await ex.close();
  return { before, peak, started: startedCount };
}

async function rss32(): Promise<void> {
  // Here, after whatever scenarios ran before (the stdout ones leave glibc's heap grown), and in a fresh process.
  const here = await rssPeak32();
  const { stdout } = await exec(process.execPath, [process.argv[1]!, "--rss-child", NS, stateDir], { maxBuffer: 1 << 20 });
  const fresh = JSON.parse(stdout) as { before: number; peak: number; started: number };
  const mb = (n: number) => r1(n / 2 ** 20);
  results["rss_32_in_flight"] = {
    this_process: { rss_before_mb: mb(here.before), rss_peak_mb: mb(here.peak), started: here.started },
    fresh_process: { rss_before_mb: mb(fresh.before), rss_peak_mb: mb(fresh.peak), started: fresh.started },
  };
  table.push(["RSS, 32 runs in flight", `${mb(here.peak)} MB`, "-", "-", "-", "-", "-"]);
  table.push(["  same, fresh process", `${mb(fresh.peak)} MB`, "-", "-", "-", "-", "-"]);
}

async function networks(): Promise<void> {
  const confDir = await mkdtemp(join(tmpdir(), "ctrexec-bench-cni-"));
  const bridge = {
    configDir: confDir,
    networkName: `ctrexec-bench-${process.pid % 100000}`,
    bridge: `ctrb${process.pid % 100000}`,
    subnet: "10.198.0.0/24",
    ipMasq: false,
  };
  const out: Record<string, unknown> = {};
  for (const [name, opts, mode] of [
    ["none", {}, "none"],
    ["bridge, pool 4", { bridge: { ...bridge, poolSize: 4 } }, "bridge"],
    ["bridge, no pool", { bridge: { ...bridge, poolSize: 0 } }, "bridge"],
  ] as const) {
    const ex = await newExecutor(opts);
    const xs: number[] = [];
    for (let i = 0; i < 2; i++) await timed(ex, { args: ["/bin/true"], network: mode });
    for (let i = 0; i < ROUNDS * PER_ROUND; i++) {
      xs.push(await timed(ex, { args: ["/bin/true"], network: mode }));
      await new Promise((r) => setTimeout(r, 30)); // let the pool refill, as between real steps
    }
    await ex.close();
    out[name] = summary(xs);
    table.push([`network ${name} (ms)`, `${r1(median(xs))} ms`, "-", "-", "-", "-", "-"]);
  }
  await exec("ip", ["link", "del", bridge.bridge]).catch(() => {});
  await rm(confDir, { recursive: true, force: true });
  await rm(join(DEFAULT_IPAM_DIR, bridge.networkName), { recursive: true, force: true });
  results["network_latency"] = out;
}

async function imageRoot(): Promise<void> {
  const ref = `docker.io/ctrexec/bench:${process.pid}`;
  const archive = join(stateDir, "bench-image.tar");
  await writeOciArchive(archive, ref, [await treeEntries(rootfs)], { Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] });
  await exec("ctr", ["-n", NS, "images", "import", "--no-unpack", archive]);
  const ex = await newExecutor();
  const image = await resolveImage(ex.client, ref);
  const dir: number[] = [];
  const img: number[] = [];
  const dflt: number[] = [];
  await ex.run({ root: { source: imageMountable(ex.client, image) }, process: { meta: { args: ["/bin/true"] } } }); // unpack
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < PER_ROUND; i++) dir.push(await timed(ex, { args: ["/bin/true"] }));
    for (let i = 0; i < PER_ROUND; i++) {
      const t = performance.now();
      await ex.run({
        root: { source: imageMountable(ex.client, image) },
        process: { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() },
      });
      img.push(performance.now() - t);
    }
    for (let i = 0; i < PER_ROUND; i++) {
      // No root: the built-in one, through a copy-on-write overlay of the run's own.
      const t = performance.now();
      await ex.run({ process: { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() } });
      dflt.push(performance.now() - t);
    }
  }
  await ex.close();
  await exec("ctr", ["-n", NS, "images", "rm", "--sync", ref]).catch(() => {});
  results["image_vs_directory_root"] = { directory: summary(dir), image: summary(img), default_root_overlay: summary(dflt) };
  table.push(["run on a directory root (ms)", `${r1(median(dir))} ms`, "-", "-", "-", "-", "-"]);
  table.push(["run on an image root (ms)", `${r1(median(img))} ms`, "-", "-", "-", "-", "-"]);
  table.push(["run on the default root (overlay) (ms)", `${r1(median(dflt))} ms`, "-", "-", "-", "-", "-"]);
}

/** A directory of `files` files of `bytes` each, in subdirs of 100: a large image's tree, for the userns cost. */
async function bulkTree(dir: string, files: number, bytes: number): Promise<void> {
  const data = Buffer.alloc(bytes, 7);
  for (let i = 0; i < files; i++) {
    const sub = join(dir, "usr", "lib", "bulk", String(Math.floor(i / 100)));
    if (i % 100 === 0) await mkdir(sub, { recursive: true });
    await writeFile(join(sub, `f${i}`), data);
  }
}

async function userns(): Promise<void> {
  const ex = await newExecutor({ userns: { pool: { start: 0x18000000, size: 65536 * 16 } } });
  const small = join(stateDir, "userns-small");
  const large = join(stateDir, "userns-large");
  await exec("cp", ["-a", rootfs, small]);
  await exec("cp", ["-a", rootfs, large]);
  await bulkTree(large, 1500, 36 * 1024); // ~54 MB in 1500 files, as the isolation probe's chown test
  const host: number[] = [];
  const auto: number[] = [];
  const dirSmall: number[] = [];
  const dirLarge: number[] = [];
  const once = async (meta: ProcessMeta, dir?: string) => {
    const t = performance.now();
    await ex.run({
      ...(dir ? { root: { source: bindMountable(dir) } } : {}),
      process: { meta, stdout: new Discard(), stderr: new Discard() },
    });
    return performance.now() - t;
  };
  for (let i = 0; i < 2; i++) {
    await once({ args: ["/bin/true"] });
    await once({ args: ["/bin/true"], userns: "auto" });
  }
  for (let round = 0; round < ROUNDS * 2; round++) {
    // Alternating, so that drift on this shared machine falls on both alike.
    for (let i = 0; i < PER_ROUND; i++) {
      host.push(await once({ args: ["/bin/true"] }));
      auto.push(await once({ args: ["/bin/true"], userns: "auto" }));
      dirSmall.push(await once({ args: ["/bin/true"], userns: "auto" }, small));
      dirLarge.push(await once({ args: ["/bin/true"], userns: "auto" }, large));
    }
  }
  await ex.close();
  results["userns"] = {
    default_root_host: summary(host),
    default_root_auto: summary(auto),
    directory_root_2mb_auto: summary(dirSmall),
    directory_root_54mb_auto: summary(dirLarge),
  };
  table.push(["run /bin/true, userns host (ms)", `${r1(median(host))} ms`, "-", "-", "-", "-", "-"]);
  table.push(['  same, userns "auto" (ms)', `${r1(median(auto))} ms`, "-", "-", "-", "-", `${(median(auto) / median(host)).toFixed(2)}x host`]);
  table.push(['  userns "auto", 2 MB directory root (ms)', `${r1(median(dirSmall))} ms`, "-", "-", "-", "-", "-"]);
  table.push([
    '  userns "auto", 54 MB / 1500-file root (ms)',
    `${r1(median(dirLarge))} ms`,
    "-",
    "-",
    "-",
    "-",
    `${(median(dirLarge) / median(dirSmall)).toFixed(2)}x 2 MB`,
  ]);
}

// ---------------------------------------------------------------- main

const SCENARIOS: Record<string, () => Promise<void>> = {
  seq: seqTrue,
  exec: execTrue,
  cancel,
  "stdout-head": () => stdout("head"),
  "stdout-dd": () => stdout("dd"),
  par4: () => parallel(4),
  par8: () => parallel(8),
  rss: rss32,
  network: networks,
  image: imageRoot,
  userns,
  pull: () => benchPull({ stateDir, rounds: quick ? 3 : 10, results, row: (name, unit, c, ctr) => row(name, unit, c, ctr), summary, median }),
  load: () => benchLoad({ namespace: NS, stateDir, rootfs, quick, results, table }),
  rootless: () => benchRootless({ namespace: NS, stateDir, rootfs, rounds: ROUNDS, perRound: PER_ROUND, results, table, median, summary }),
  cli: () => benchCli({ namespace: NS, stateDir, rootfs, rounds: quick ? 4 : 16, results, table, median, summary }),
};

async function main(): Promise<void> {
  if (args[0] === "--pull-rss-child") {
    await pullRssChild(args[1]!, args[2]!);
    return;
  }
  if (args[0] === "--rss-child") {
    // A fresh process for the RSS scenario: node dist/bench/main.js --rss-child NAMESPACE STATE_DIR
    stateDir = args[2]!;
    rootfs = await ensureDefaultRootfs(stateDir);
    process.stdout.write(`${JSON.stringify(await rssPeak32())}\n`);
    return;
  }
  stateDir = await mkdtemp(join(tmpdir(), "ctrexec-bench-"));
  rootfs = await ensureDefaultRootfs(stateDir);
  // The Go anchor runs /bin/<tool> (its README); busybox puts some applets under /usr/bin.
  for (const tool of ["true", "head", "dd", "yes", "sleep", "sh"]) {
    if (!existsSync(join(rootfs, "bin", tool))) await symlink("/bin/busybox", join(rootfs, "bin", tool));
  }
  await prepareBundle();
  process.stderr.write(`bench: namespace ${NS}, ${quick ? "quick" : "full"} mode, go anchor ${haveGo ? GO_ANCHOR : "not built"}\n`);
  try {
    for (const [name, f] of Object.entries(SCENARIOS)) {
      if (only && !only.has(name)) continue;
      process.stderr.write(`bench: ${name}\n`);
      await f();
      rssAfter[name] = r1(process.memoryUsage().rss / 2 ** 20);
    }
  } finally {
    const ex = await newExecutor();
    for (const c of await ex.client.containers.list()) await ex.client.containers.delete(c.id).catch(() => {});
    for (let i = 0; i < 20; i++) {
      const snaps = await ex.client.snapshots.list("overlayfs").catch(() => []);
      if (snaps.length === 0) break;
      const parents = new Set(snaps.map((x) => x.parent));
      for (const x of snaps.filter((x) => !parents.has(x.name)))
        await ex.client.snapshots.remove({ snapshotter: "overlayfs", key: x.name }).catch(() => {});
    }
    if (
      await ex.client.namespaces.delete(NS).then(
        () => true,
        () => false,
      )
    )
      await removeRuntimeNamespaceDirs(NS);
    await ex.close();
    if (haveGo) await exec(GO_ANCHOR, ["clean", "-namespace", NS]).catch(() => {});
    await rm(stateDir, { recursive: true, force: true });
  }
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => (r[i] ?? "").length)));
  process.stdout.write(
    `${table
      .map((r) =>
        r
          .map((c, i) => c.padEnd(widths[i]! + 2))
          .join("")
          .trimEnd(),
      )
      .join("\n")}\n`,
  );
  const json = JSON.stringify({ date: new Date().toISOString(), quick, goAnchor: haveGo, results, rss_mb_after_scenario: rssAfter }, null, 2);
  if (jsonOut) await writeFile(jsonOut, `${json}\n`);
  else process.stdout.write(`${json}\n`);
}

await main();
