import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ContainerdClient } from "../../src/containerd/client.js";

/** Where the runc v2 shim keeps runc's state: the host's default, whatever containerd's own state dir is. */
const RUNC_ROOT = "/run/containerd/runc";

/** The bundle a runc state.json names (the runc v2 shim labels each container with it); undefined if none. */
function bundleOf(stateJson: string): string | undefined {
  let labels: unknown;
  try {
    labels = (JSON.parse(stateJson) as { config?: { labels?: unknown } }).config?.labels;
  } catch {
    return undefined;
  }
  const label = Array.isArray(labels) ? labels.find((l): l is string => typeof l === "string" && l.startsWith("bundle=")) : undefined;
  return label?.slice("bundle=".length);
}

/**
 * A containerd of the test's own (own socket, root and state dirs), for faults that must not touch the
 * shared daemon: restarting it, stopping it. Only this process's own child is ever signalled.
 */
export class OwnContainerd {
  /**
   * What earlier test processes, now dead, left of their OwnContainerd(`name`): their dirs, and runc states of
   * containers whose bundle was in one. A process killed before its cleanup (the runner kills a test file at its
   * timeout) leaves its shims and runc states for good; nothing in that process can report it, the next run does.
   */
  static async leftByDeadRuns(name: string): Promise<string[]> {
    const prefix = `/run/ctrexec-test-${name}-`;
    const dead = (dir: string) => {
      const pid = Number(/^(\d+)(?:\/|$)/.exec(dir.slice(prefix.length))?.[1]);
      return pid > 0 && pid !== process.pid && !existsSync(`/proc/${pid}`);
    };
    const left: string[] = [];
    for (const entry of await readdir("/run").catch(() => [])) {
      if (`/run/${entry}`.startsWith(prefix) && dead(`/run/${entry}`)) left.push(`/run/${entry}`);
    }
    for (const ns of await readdir(RUNC_ROOT).catch(() => [])) {
      for (const id of await readdir(join(RUNC_ROOT, ns)).catch(() => [])) {
        const bundle = bundleOf(await readFile(join(RUNC_ROOT, ns, id, "state.json"), "utf8").catch(() => ""));
        if (bundle?.startsWith(prefix) && dead(bundle)) left.push(`runc state ${join(RUNC_ROOT, ns, id)} (bundle ${bundle})`);
      }
    }
    return left;
  }

  readonly dir: string;
  readonly address: string;
  #child: ChildProcess | undefined;
  #disposed = false;

  constructor(name: string) {
    this.dir = `/run/ctrexec-test-${name}-${process.pid}`;
    this.address = join(this.dir, "c.sock");
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const config = join(this.dir, "config.toml");
    await writeFile(
      config,
      [
        "version = 2",
        `root = "${join(this.dir, "root")}"`,
        `state = "${join(this.dir, "state")}"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        `  address = "${this.address}"`,
        "",
      ].join("\n"),
    );
    this.#child = spawn("containerd", ["--config", config], { stdio: ["ignore", "ignore", "ignore"] });
    const client = new ContainerdClient({ address: this.address, namespace: "probe" });
    try {
      for (let i = 0; i < 100; i++) {
        if (
          await client.version().then(
            () => true,
            () => false,
          )
        )
          return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`our containerd did not answer on ${this.address}`);
    } finally {
      await client.close();
    }
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Stops the daemon (SIGTERM, then SIGKILL after 5 s); shims keep running, as in a real restart. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }

  /**
   * Ids of the containers of this containerd in `namespace` for which runc still has state. runc's root is the
   * host's (RUNC_ROOT/<namespace>), shared with the system containerd's namespace of the same name: only the
   * states whose bundle is under this containerd's dir are its own.
   */
  async runcStates(namespace: string): Promise<string[]> {
    const ids: string[] = [];
    for (const id of await readdir(join(RUNC_ROOT, namespace)).catch(() => [])) {
      const bundle = bundleOf(await readFile(join(RUNC_ROOT, namespace, id, "state.json"), "utf8").catch(() => ""));
      if (bundle?.startsWith(`${this.dir}/`)) ids.push(id);
    }
    return ids;
  }

  /**
   * Stops the daemon and removes its dirs, after deleting, through the daemon itself, every task and container
   * it still has. A test that failed, or hung (a timeout runs no `finally`), before its own cleanup leaves a task
   * behind; removing the dirs alone would orphan its shim and leave runc's state under the host's RUNC_ROOT for
   * good, since nothing would ever run the shim's delete for it. Call it from `t.after` (which runs after a
   * timeout too) as well as from the test's own cleanup: idempotent.
   */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#child) {
      if (!this.running) await this.start().catch(() => {});
      await this.#deleteEverything().catch(() => {});
    }
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  async #deleteEverything(): Promise<void> {
    const client = new ContainerdClient({ address: this.address, namespace: "probe", timeoutMs: 10_000 });
    try {
      for (const ns of await client.namespaces.list()) {
        const c = client.withNamespace(ns);
        for (const t of await c.tasks.list().catch(() => [])) {
          await c.tasks.kill({ containerId: t.id, signal: 9, all: true }).catch(() => {});
          await c.tasks.wait({ containerId: t.id }, { timeoutMs: 5000 }).catch(() => {});
          await c.tasks.delete(t.id).catch(() => {});
        }
        for (const rec of await c.containers.list().catch(() => [])) await c.containers.delete(rec.id).catch(() => {});
        await c.namespaces.delete(ns).catch(() => {});
      }
    } finally {
      await client.close();
    }
  }
}
