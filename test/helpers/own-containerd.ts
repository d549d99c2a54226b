import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ContainerdClient } from "../../src/containerd/client.js";

/**
 * A containerd of the test's own (own socket, root and state dirs), for faults that must not touch the
 * shared daemon: restarting it, stopping it. Only this process's own child is ever signalled.
 */
export class OwnContainerd {
  readonly dir: string;
  readonly address: string;
  #child: ChildProcess | undefined;

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
        if (await client.version().then(() => true, () => false)) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`our containerd did not answer on ${this.address}`);
    } finally {
      await client.close();
    }
  }

  /** Stops the daemon (SIGTERM, then SIGKILL after 5 s); shims keep running, as in a real restart. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }

  async dispose(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
