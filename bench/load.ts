/**
 * Cost as the work grows (`--only load`): what a machine pays per run as more runs are in flight.
 *
 * Throughput: for each level N of runs in flight, a fresh executor (default options, the bench's directory root,
 * the host network, stdout and stderr into a discarding sink) and N workers that run `/bin/true` back to back;
 * after a warm-up of N runs (which founds the shims the workers then reuse) and a wait for a quiet machine, the
 * measured window covers a fixed number of runs and the executor settling their deletions. Reported: runs/s,
 * latency median and p95, the machine's busy CPU per run from /proc/stat (all CPUs; idle and iowait excluded) and
 * the executor process's own, from the least disturbed of several rounds (other load on a shared host only adds).
 *
 * RSS: for each level N, a fresh process (this file run as a script, with a raised RLIMIT_NOFILE) starts N runs
 * of `sleep` at once, waits until all have started, reads its RSS, peak, heap and fds and the shims' RSS and PSS
 * from /proc, then cancels them all and closes. After every level the namespace is checked for leftovers.
 * Figures go to docs/performance.md, not here.
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { getHeapStatistics } from "node:v8";
import { ContainerdClient } from "../src/containerd/client.js";
import { ContainerdExecutor } from "../src/executor/executor.js";
import { bindMountable } from "../src/executor/mountables.js";
import { mountsUnder, shimsOf } from "../test/helpers/env.js";
import { Discard } from "./run-exec-probe.js";

const exec = promisify(execFile);

export interface LoadBenchContext {
  namespace: string;
  stateDir: string;
  rootfs: string;
  quick: boolean;
  results: Record<string, unknown>;
  /** The bench's table: [scenario, ctrexec, ctr, runc, go client, ctrexec/go, ctrexec/ctr]. */
  table: string[][];
}

const THROUGHPUT_LEVELS = [1, 2, 4, 8, 16, 32];
const RSS_LEVELS = [32, 128, 512];

const r1 = (n: number) => Math.round(n * 10) / 10;
const mb = (bytes: number) => r1(bytes / 2 ** 20);
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
}

function newExecutor(namespace: string, stateDir: string): Promise<ContainerdExecutor> {
  return ContainerdExecutor.create({ namespace, root: stateDir, fifoRoot: join(stateDir, "fifo"), defaultNetwork: "host" });
}

/** The whole machine's busy CPU so far, in ms: user, nice, system, irq, softirq, steal (guest is inside user). */
async function machineBusyMs(): Promise<number> {
  const f = (await readFile("/proc/stat", "utf8")).split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const busy = [0, 1, 2, 5, 6, 7].reduce((a, i) => a + (f[i] ?? 0), 0);
  return (busy * 1000) / 100; // USER_HZ
}

function statusKb(text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

// ---------------------------------------------------------------- throughput

/** One measured window at one level. */
interface Round {
  runs: number;
  wallMs: number;
  latencies: number[];
  machineMs: number;
  executorMs: number;
  /** The machine just before the window. */
  before: { waited_ms: number; busy_pct: number };
}

interface LevelResult {
  in_flight: number;
  rounds: number;
  runs_per_round: number;
  /** Of the least disturbed round: the one with the least machine CPU per run (other load only adds to it). */
  runs_s: number;
  latency_ms: { median: number; p95: number; max: number };
  machine_cpu_ms_per_run: number;
  machine_busy_pct: number;
  executor_cpu_ms_per_run: number;
  per_round: {
    runs_s: number;
    machine_cpu_ms_per_run: number;
    executor_cpu_ms_per_run: number;
    latency_median_ms: number;
    machine_before: { waited_ms: number; busy_pct: number };
  }[];
}

/**
 * Waits, at most 60 s, for half a second in which the whole machine is less than 15% busy: on a shared host,
 * another user's burst would otherwise land in the window and count as the runs' CPU. Returns the last sample.
 */
async function quietMachine(): Promise<{ waited_ms: number; busy_pct: number }> {
  const t0 = performance.now();
  for (;;) {
    const b0 = await machineBusyMs();
    const s0 = performance.now();
    await new Promise((r) => setTimeout(r, 500));
    const busy = (100 * ((await machineBusyMs()) - b0)) / ((performance.now() - s0) * cpus().length);
    if (busy < 15 || performance.now() - t0 > 60_000) return { waited_ms: Math.round(performance.now() - t0), busy_pct: r1(busy) };
  }
}

async function throughput(ctx: LoadBenchContext, n: number): Promise<Round> {
  const ex = await newExecutor(ctx.namespace, ctx.stateDir);
  const one = () =>
    ex.run({
      root: { source: bindMountable(ctx.rootfs) },
      process: { meta: { args: ["/bin/true"] }, stdout: new Discard(), stderr: new Discard() },
    });
  try {
    await Promise.all(Array.from({ length: n }, one));
    await ex.settled({ keepReusableShims: true });
    const total = ctx.quick ? Math.max(16, 4 * n) : Math.max(40, 8 * n);
    const latencies: number[] = [];
    let next = 0;
    const before = await quietMachine();
    const m0 = await machineBusyMs();
    const p0 = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: n }, async () => {
        while (next++ < total) {
          const t = performance.now();
          await one();
          latencies.push(performance.now() - t);
        }
      }),
    );
    // The background deletions of these runs are part of their cost.
    await ex.settled({ keepReusableShims: true });
    const wallMs = performance.now() - t0;
    const p = process.cpuUsage(p0);
    const machineMs = (await machineBusyMs()) - m0;
    return { runs: total, wallMs, latencies, machineMs, executorMs: (p.user + p.system) / 1000, before };
  } finally {
    await ex.close();
  }
}

function level(n: number, rounds: Round[]): LevelResult {
  const best = rounds.reduce((a, b) => (b.machineMs / b.runs < a.machineMs / a.runs ? b : a));
  return {
    in_flight: n,
    rounds: rounds.length,
    runs_per_round: best.runs,
    runs_s: r1(best.runs / (best.wallMs / 1000)),
    latency_ms: { median: r1(quantile(best.latencies, 0.5)), p95: r1(quantile(best.latencies, 0.95)), max: r1(Math.max(...best.latencies)) },
    machine_cpu_ms_per_run: r1(best.machineMs / best.runs),
    machine_busy_pct: r1((100 * best.machineMs) / (best.wallMs * cpus().length)),
    executor_cpu_ms_per_run: r1(best.executorMs / best.runs),
    per_round: rounds.map((r) => ({
      runs_s: r1(r.runs / (r.wallMs / 1000)),
      machine_cpu_ms_per_run: r1(r.machineMs / r.runs),
      executor_cpu_ms_per_run: r1(r.executorMs / r.runs),
      latency_median_ms: r1(quantile(r.latencies, 0.5)),
      machine_before: r.before,
    })),
  };
}

// ---------------------------------------------------------------- leftovers

/** What is left of the namespace's runs: containers, tasks, shims, mounts and FIFO dirs under the state dir. */
async function leftovers(ctx: LoadBenchContext, mountsBefore: Set<string>): Promise<string[]> {
  const client = new ContainerdClient({ namespace: ctx.namespace });
  const left: string[] = [];
  try {
    for (const c of await client.containers.list()) left.push(`container ${c.id}`);
    for (const t of await client.tasks.list()) left.push(`task ${t.id}`);
  } finally {
    await client.close();
  }
  // containerd cleans up after a shim that exits with a short-lived `shim ... delete`: give that a moment.
  let shims = shimsOf(ctx.namespace);
  for (let i = 0; i < 50 && shims.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    shims = shimsOf(ctx.namespace);
  }
  for (const pid of shims) left.push(`shim ${pid}`);
  for (const m of mountsUnder(ctx.stateDir)) if (!mountsBefore.has(m)) left.push(`mount ${m}`);
  const fifo = join(ctx.stateDir, "fifo");
  for (const ns of await readdir(fifo).catch(() => [])) {
    for (const d of await readdir(join(fifo, ns)).catch(() => [])) left.push(`fifo dir ${ns}/${d}`);
  }
  return left;
}

// ---------------------------------------------------------------- RSS (the child)

interface RssResult {
  in_flight: number;
  started: number;
  error?: string;
  nofile_limit: string;
  start_all_ms: number;
  cancel_all_ms: number;
  close_ms: number;
  rss_before_mb: number;
  rss_mb: number;
  rss_peak_mb: number;
  rss_anon_mb: number;
  rss_file_mb: number;
  heap_total_mb: number;
  heap_used_mb: number;
  external_mb: number;
  array_buffers_mb: number;
  v8_malloced_mb: number;
  rss_after_gc_mb: number;
  heap_total_after_gc_mb: number;
  heap_used_after_gc_mb: number;
  /** RSS less the V8 heap and external memory: Node's and the addon's native allocations, code, stacks. */
  native_other_mb: number;
  fds: Record<string, number>;
  shims: number;
  shims_rss_mb: number;
  shims_pss_mb: number;
  shim_threads: number;
  machine_used_raise_mb: number;
}

function fdKinds(fifoRoot: string): Record<string, number> {
  const kinds: Record<string, number> = { total: 0 };
  for (const fd of readdirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    const kind = target.startsWith(fifoRoot)
      ? "fifo"
      : target.startsWith("socket:")
        ? "socket"
        : target.startsWith("pipe:")
          ? "pipe"
          : target.startsWith("anon_inode:")
            ? target.slice("anon_inode:".length).replace(/[[\]]/g, "")
            : "other";
    kinds["total"]!++;
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}

function shimCost(namespace: string): { shims: number; rssKb: number; pssKb: number; threads: number } {
  const out = { shims: 0, rssKb: 0, pssKb: 0, threads: 0 };
  for (const pid of shimsOf(namespace)) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
      out.shims++;
      out.rssKb += statusKb(status, "VmRSS");
      out.threads += Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      out.pssKb += statusKb(rollup, "Pss");
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function machineUsedKb(): number {
  const m = readFileSync("/proc/meminfo", "utf8");
  return statusKb(m, "MemTotal") - statusKb(m, "MemAvailable");
}

/** node dist/bench/load.js --rss-child N NAMESPACE STATE_DIR ROOTFS: prints one JSON line (RssResult). */
async function rssChild(n: number, namespace: string, stateDir: string, rootfs: string): Promise<void> {
  const ex = await newExecutor(namespace, stateDir);
  const nofile = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1] ?? "?";
  const before = readFileSync("/proc/self/status", "utf8");
  const usedBefore = machineUsedKb();
  // The high-water mark so far belongs to start-up; reset it so that the peak is the runs' (Linux ≥ 4.0).
  try {
    writeFileSync("/proc/self/clear_refs", "5");
  } catch {
    // an older kernel: the peak then includes start-up, which is below the runs'
  }
  const ac = new AbortController();
  let started = 0;
  let allStarted!: () => void;
  const ready = new Promise<void>((r) => (allStarted = r));
  let firstError: string | undefined;
  const t0 = performance.now();
  const runs = Array.from({ length: n }, () =>
    ex
      .run({
        root: { source: bindMountable(rootfs) },
        process: { meta: { args: ["sleep", "600"] }, stdout: new Discard(), stderr: new Discard() },
        signal: ac.signal,
        onStarted: () => {
          if (++started === n) allStarted();
        },
      })
      .catch((e: unknown) => {
        if (!ac.signal.aborted) firstError ??= e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      }),
  );
  // A run that fails before it starts would keep `ready` pending: the settling of every run ends the wait too.
  await Promise.race([ready, Promise.all(runs)]);
  const startAll = performance.now() - t0;
  const mem = process.memoryUsage();
  const heap = getHeapStatistics();
  const status = readFileSync("/proc/self/status", "utf8");
  const fds = fdKinds(ex.fifoRoot);
  const shims = shimCost(namespace);
  const usedRaise = machineUsedKb() - usedBefore;
  // What of the heap is live, and what the RSS is without the garbage of the start: the collector runs only here.
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const afterGc = process.memoryUsage();
  const t1 = performance.now();
  ac.abort();
  await Promise.all(runs);
  const cancelAll = performance.now() - t1;
  const t2 = performance.now();
  await ex.close();
  const closeMs = performance.now() - t2;
  const kbMb = (kb: number) => r1(kb / 1024);
  const result: RssResult = {
    in_flight: n,
    started,
    ...(firstError !== undefined ? { error: firstError } : {}),
    nofile_limit: nofile,
    start_all_ms: Math.round(startAll),
    cancel_all_ms: Math.round(cancelAll),
    close_ms: Math.round(closeMs),
    rss_before_mb: kbMb(statusKb(before, "VmRSS")),
    rss_mb: kbMb(statusKb(status, "VmRSS")),
    rss_peak_mb: kbMb(statusKb(status, "VmHWM")),
    rss_anon_mb: kbMb(statusKb(status, "RssAnon")),
    rss_file_mb: kbMb(statusKb(status, "RssFile")),
    heap_total_mb: mb(mem.heapTotal),
    heap_used_mb: mb(mem.heapUsed),
    external_mb: mb(mem.external),
    array_buffers_mb: mb(mem.arrayBuffers),
    v8_malloced_mb: mb(heap.malloced_memory),
    rss_after_gc_mb: gc ? mb(afterGc.rss) : NaN,
    heap_total_after_gc_mb: gc ? mb(afterGc.heapTotal) : NaN,
    heap_used_after_gc_mb: gc ? mb(afterGc.heapUsed) : NaN,
    native_other_mb: mb(mem.rss - mem.heapTotal - mem.external),
    fds,
    shims: shims.shims,
    shims_rss_mb: kbMb(shims.rssKb),
    shims_pss_mb: kbMb(shims.pssKb),
    shim_threads: shims.threads,
    machine_used_raise_mb: kbMb(usedRaise),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// ---------------------------------------------------------------- the scenario

function push(table: string[][], name: string, value: string): void {
  table.push([name, value, "-", "-", "-", "-", "-"]);
}

export async function benchLoad(ctx: LoadBenchContext): Promise<void> {
  const mountsBefore = new Set(mountsUnder(ctx.stateDir));
  const leaks: Record<string, string[]> = {};
  const check = async (what: string) => {
    const left = await leftovers(ctx, mountsBefore);
    if (left.length > 0) leaks[what] = left;
  };

  // What the rest of the machine (other users of this shared host) burns, before and after, to read the CPU rows
  // against: the machine's CPU per run includes it.
  const background = async () => {
    const b0 = await machineBusyMs();
    await new Promise((r) => setTimeout(r, 3000));
    return r1((100 * ((await machineBusyMs()) - b0)) / (3000 * cpus().length));
  };
  const backgroundBefore = await background();

  // Rounds that each go through every level, so that a burst of other load falls on one round of each, not on
  // every round of one level; each level reports its least disturbed round, and the JSON every round.
  const rounds = new Map<number, Round[]>(THROUGHPUT_LEVELS.map((n) => [n, []]));
  for (let round = 0; round < (ctx.quick ? 1 : 5); round++) {
    for (const n of THROUGHPUT_LEVELS) {
      process.stderr.write(`bench: load, round ${round + 1}, ${n} in flight\n`);
      rounds.get(n)!.push(await throughput(ctx, n));
      await check(`throughput_${n}`);
    }
  }
  const backgroundAfter = await background();
  const levels: LevelResult[] = [];
  for (const n of THROUGHPUT_LEVELS) {
    const l = level(n, rounds.get(n)!);
    levels.push(l);
    push(ctx.table, `load: ${n} in flight, /bin/true (runs/s)`, `${l.runs_s} /s`);
    push(ctx.table, "  latency median / p95 (ms)", `${l.latency_ms.median} / ${l.latency_ms.p95} ms`);
    push(ctx.table, "  CPU per run, machine / executor (ms)", `${l.machine_cpu_ms_per_run} / ${l.executor_cpu_ms_per_run} ms`);
  }

  const rss: RssResult[] = [];
  let stoppedAt: string | undefined;
  const script = fileURLToPath(import.meta.url);
  for (const n of RSS_LEVELS) {
    process.stderr.write(`bench: load, RSS with ${n} in flight\n`);
    let r: RssResult;
    try {
      // Two FIFOs per run in the executor: the child's own soft limit goes as high as this process may take it
      // (above the hard limit only with CAP_SYS_RESOURCE); nothing host-wide.
      const { stdout } = await exec(
        "bash",
        [
          "-c",
          'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"',
          process.execPath,
          "--expose-gc",
          script,
          "--rss-child",
          String(n),
          ctx.namespace,
          ctx.stateDir,
          ctx.rootfs,
        ],
        { maxBuffer: 1 << 20 },
      );
      r = JSON.parse(stdout) as RssResult;
    } catch (e) {
      stoppedAt = `${n} in flight: the child failed: ${e instanceof Error ? e.message : String(e)}`;
      await check(`rss_${n}`);
      break;
    }
    await check(`rss_${n}`);
    rss.push(r);
    push(ctx.table, `load: RSS, ${n} sleeping runs in flight (MB)`, `${r.rss_mb} MB (peak ${r.rss_peak_mb})`);
    push(
      ctx.table,
      "  heap total / used / external / native+other (MB)",
      `${r.heap_total_mb} / ${r.heap_used_mb} / ${r.external_mb} / ${r.native_other_mb} MB`,
    );
    push(ctx.table, "  RSS / heap total after a full GC (MB)", `${r.rss_after_gc_mb} / ${r.heap_total_after_gc_mb} MB`);
    push(ctx.table, "  fds / shims / shims' PSS (MB)", `${r.fds["total"]} / ${r.shims} / ${r.shims_pss_mb} MB`);
    if (r.started < n) {
      stoppedAt = `${n} in flight: ${r.started} started; ${r.error ?? "no error reported"}`;
      break;
    }
  }
  ctx.results["load"] = {
    cpus: cpus().length,
    background_busy_pct: { before: backgroundBefore, after: backgroundAfter },
    throughput: levels,
    rss,
    ...(stoppedAt !== undefined ? { stopped_at: stoppedAt } : {}),
    leftovers: leaks,
  };
  if (stoppedAt !== undefined) push(ctx.table, "load: RSS levels stopped", stoppedAt.slice(0, 60));
  if (Object.keys(leaks).length > 0) throw new Error(`load: runs left things behind: ${JSON.stringify(leaks)}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === "--rss-child") {
  const [n, namespace, stateDir, rootfs] = process.argv.slice(3);
  await rssChild(Number(n), namespace!, stateDir!, rootfs!);
}
