/**
 * Pull benchmark rows: a ~60 MB, 3-layer image of incompressible data from a loopback registry (Debian's
 * docker-registry), pulled cold (a fresh namespace: nothing of it in the store) and again warm (everything
 * present), by `ctrexec pull` (a whole process, like ctr), by `pullImage` in-process, and by
 * `ctr images pull --plain-http`, in alternating order; and the RSS a pull of one 500 MB layer adds to a fresh
 * process. Figures go to docs/performance.md, not here.
 */
import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { ContainerdClient } from "../src/containerd/client.js";
import { pullImage } from "../src/image/pull.js";
import { removeRuntimeNamespaceDirs } from "../test/helpers/env.js";
import { writeLargeLayerLayout, writeRandomLayout } from "../test/helpers/oci-image.js";
import { startRegistry } from "../test/helpers/registry.js";

const exec = promisify(execFile);

export interface PullBenchContext {
  stateDir: string;
  rounds: number;
  results: Record<string, unknown>;
  /** Adds a table row: name, unit, ctrexec's value, ctr's. */
  row(name: string, unit: string, ctrexec: number, ctr?: number): void;
  summary(xs: number[]): unknown;
  median(xs: number[]): number;
}

const CLI = new URL("../src/cli/ctrexec.mjs", import.meta.url).pathname;

function run(cmd: string, argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const t = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ["ignore", "ignore", "pipe"], env });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) =>
      code === 0 ? resolve(performance.now() - t) : reject(new Error(`${cmd} ${argv.join(" ")} failed (${code}): ${err}`)),
    );
  });
}

/** Removes a bench namespace: its image (GC then takes content and snapshots), what is left, the namespace. */
async function dropNamespace(ns: string, ref: string): Promise<void> {
  await exec("ctr", ["-n", ns, "images", "rm", "--sync", ref]).catch(() => {});
  const client = new ContainerdClient({ namespace: ns });
  try {
    for (let i = 0; i < 20; i++) {
      const snaps = await client.snapshots.list("overlayfs").catch(() => []);
      if (snaps.length === 0) break;
      const parents = new Set(snaps.map((x) => x.parent));
      for (const x of snaps.filter((x) => !parents.has(x.name)))
        await client.snapshots.remove({ snapshotter: "overlayfs", key: x.name }).catch(() => {});
    }
    for (const blob of await client.content.list().catch(() => [])) await client.content.delete(blob.digest).catch(() => {});
    if (
      await client.namespaces.delete(ns).then(
        () => true,
        () => false,
      )
    )
      await removeRuntimeNamespaceDirs(ns);
  } finally {
    await client.close();
  }
}

export async function benchPull(ctx: PullBenchContext): Promise<void> {
  const registry = await startRegistry({ dir: ctx.stateDir });
  try {
    const layout = join(ctx.stateDir, "pull-layout");
    await writeRandomLayout(layout, { tag: "1" });
    await registry.push(`oci:${layout}:1`, "bench/pull:1");
    const ref = `${registry.host}/bench/pull:1`;
    const tools: Record<string, (ns: string) => Promise<number>> = {
      cli: (ns) => run(process.execPath, [CLI, "--namespace", ns, "--root", ctx.stateDir, "pull", "-q", ref]),
      lib: async (ns) => {
        const client = new ContainerdClient({ namespace: ns });
        try {
          const t = performance.now();
          await pullImage(client, ref);
          return performance.now() - t;
        } finally {
          await client.close();
        }
      },
      ctr: (ns) => run("ctr", ["-n", ns, "images", "pull", "--plain-http", ref]),
    };
    const cold: Record<string, number[]> = { cli: [], lib: [], ctr: [] };
    const warm: Record<string, number[]> = { cli: [], lib: [], ctr: [] };
    const names = Object.keys(tools);
    for (let round = 0; round < ctx.rounds; round++) {
      // Alternate which tool goes first, so a drift of the machine does not favour one.
      const order = round % 2 === 0 ? names : [...names].reverse();
      for (const name of order) {
        const ns = `ctrexec-bench-pull-${process.pid}-${round}-${name}`;
        try {
          cold[name]!.push(await tools[name]!(ns));
          warm[name]!.push(await tools[name]!(ns));
        } finally {
          await dropNamespace(ns, ref);
        }
      }
    }
    ctx.results["pull_60mb"] = {
      cold: Object.fromEntries(names.map((n) => [n, ctx.summary(cold[n]!)])),
      warm: Object.fromEntries(names.map((n) => [n, ctx.summary(warm[n]!)])),
    };
    ctx.row("pull 60 MB cold, ctrexec pull CLI (ms)", "ms", ctx.median(cold["cli"]!), ctx.median(cold["ctr"]!));
    ctx.row("pull 60 MB cold, pullImage in-process (ms)", "ms", ctx.median(cold["lib"]!), ctx.median(cold["ctr"]!));
    ctx.row("pull 60 MB again (all present), CLI (ms)", "ms", ctx.median(warm["cli"]!), ctx.median(warm["ctr"]!));
    ctx.row("pull 60 MB again (all present), in-process (ms)", "ms", ctx.median(warm["lib"]!), ctx.median(warm["ctr"]!));

    // RSS: a fresh process pulls (and unpacks) one 500 MB layer; what it adds over its own start.
    const big = join(ctx.stateDir, "pull-big");
    await writeLargeLayerLayout(big, { tag: "1" });
    await registry.push(`oci:${big}:1`, "bench/big:1");
    const bigRef = `${registry.host}/bench/big:1`;
    const ns = `ctrexec-bench-pull-${process.pid}-rss`;
    try {
      const { stdout } = await exec(process.execPath, [new URL("./main.js", import.meta.url).pathname, "--pull-rss-child", ns, bigRef], {
        maxBuffer: 1 << 20,
      });
      const rss = JSON.parse(stdout) as { before_mb: number; peak_mb: number; raise_mb: number; ms: number };
      ctx.results["pull_500mb_layer_rss"] = rss;
      ctx.row("pull of a 500 MB layer: RSS raise (MB)", "MB", rss.raise_mb);
      ctx.row("pull of a 500 MB layer: wall (ms)", "ms", rss.ms);
    } finally {
      await dropNamespace(ns, bigRef);
    }
  } finally {
    await registry.stop();
  }
}

function statusKb(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync("/proc/self/status", "utf8"));
  return m ? Number(m[1]) : NaN;
}

/** The child of the RSS row: node dist/bench/main.js --pull-rss-child NAMESPACE REF. Prints one JSON line. */
export async function pullRssChild(ns: string, ref: string): Promise<void> {
  const client = new ContainerdClient({ namespace: ns });
  await client.version();
  const before = statusKb("VmRSS");
  // The high-water mark so far belongs to start-up; reset it so the peak is the pull's (Linux ≥ 4.0).
  await exec("sh", ["-c", `echo 5 > /proc/${process.pid}/clear_refs`]).catch(() => {});
  const t = performance.now();
  await pullImage(client, ref);
  const ms = performance.now() - t;
  const peak = statusKb("VmHWM");
  await client.close();
  const mb = (kb: number) => Math.round((kb / 1024) * 10) / 10;
  process.stdout.write(`${JSON.stringify({ before_mb: mb(before), peak_mb: mb(peak), raise_mb: mb(peak - before), ms: Math.round(ms) })}\n`);
}
