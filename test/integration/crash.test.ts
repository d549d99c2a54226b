import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, constants as fsc, readdirSync, readFileSync } from "node:fs";
import { chmod, type FileHandle, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { DEFAULT_IPAM_DIR, DEFAULT_NETWORK_NAME } from "../../src/network/bridge.js";
import { createTestEnv, type TestEnv } from "../helpers/env.js";

const run = promisify(execFile);
const CLI = fileURLToPath(new URL("../../src/cli/ctrexec.mjs", import.meta.url));

/**
 * SIGKILL of `ctrexec run --network bridge` at named moments, then `ctrexec prune`: nothing of the dead run may
 * be left. The moments are reached deterministically with real parts, no hooks in ctrexec: wrappers of the
 * programs it (or the CNI plugins, or containerd for it) runs, first on PATH or given as the shim launcher,
 * stop at their first call until the test lets them go, after the CLI is dead; what they then finish is what a
 * crash leaves to prune. The network is the one scripts/setup.sh wrote (the CLI has no option for another); a
 * dead run is recognised there by its own CNI container ids.
 */
describe("crash of a bridge-network run, then prune (CLI)", () => {
  let wrappers: string;
  let env: TestEnv | undefined;
  let n = 0;

  before(async () => {
    wrappers = await mkdtemp(join(tmpdir(), "ctrexec-test-crash-wrap-"));
  });
  afterEach(async () => {
    await env?.dispose();
    env = undefined;
  });
  after(async () => {
    await rm(wrappers, { recursive: true, force: true });
  });

  /**
   * A wrapper for the program `name` ("shim": containerd-shim-runc-v2) that, on its first call (and, with `onlyFor`, only for that argument), says so on the
   * FIFO `reached` and waits for a line on the FIFO `go`: before running the program, or (`after`) once it has
   * run, before handing on its output. Every other call runs the program alone.
   */
  async function wrapper(dir: string, name: string, o: { onlyFor?: string; after?: boolean } = {}): Promise<string> {
    const path = join(dir, name);
    const real = (await run("sh", ["-c", `command -v ${name === "shim" ? "containerd-shim-runc-v2" : name}`])).stdout.trim();
    const when = o.onlyFor ? `case " $* " in *" ${o.onlyFor} "*) true ;; *) false ;; esac && ` : "";
    const pause = `  echo "$$" > "${dir}/reached"\n  read line < "${dir}/go"\n`;
    const body = o.after
      ? `if ${when}mkdir "${dir}/paused" 2>/dev/null; then\n  out=$(${real} "$@") || exit\n${pause}  printf '%s' "$out"\n  exit 0\nfi\n`
      : `if ${when}mkdir "${dir}/paused" 2>/dev/null; then\n${pause}fi\n`;
    await writeFile(path, `#!/bin/sh\n${body}exec ${real} "$@"\n`);
    await chmod(path, 0o755);
    return path;
  }

  /** Lets a paused wrapper go on, if it is still there (containerd kills what it ran for a caller that died). */
  async function letGo(dir: string): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await open(join(dir, "go"), fsc.O_WRONLY | fsc.O_NONBLOCK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENXIO") return; // no reader: the wrapper is gone
      throw err;
    }
    try {
      await fh.write("go\n");
    } catch (err) {
      // The reader went between the open and the write (containerd killed the wrapper): gone all the same.
      if ((err as NodeJS.ErrnoException).code !== "EPIPE") throw err;
    } finally {
      await fh.close();
    }
  }

  /** Processes in process group `pgid` (the CLI's: its unshare, CNI plugins and their iptables). */
  function groupMembers(pgid: number): number[] {
    const pids: number[] = [];
    for (const e of readdirSync("/proc")) {
      if (!/^\d+$/.test(e)) continue;
      try {
        const stat = readFileSync(`/proc/${e}/stat`, "utf8");
        if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) === pgid) pids.push(Number(e));
      } catch {
        // gone
      }
    }
    return pids;
  }

  async function untilGroupGone(pgid: number): Promise<void> {
    for (let i = 0; i < 600 && groupMembers(pgid).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(groupMembers(pgid), [], "the crashed CLI's children did not finish");
  }

  function cli(e: TestEnv, args: string[], extraEnv: Record<string, string>): ChildProcess {
    return spawn(process.execPath, [CLI, "--root", e.stateDir, "--namespace", e.namespace, ...args], {
      env: { ...process.env, CTREXEC_FIFO_ROOT: e.fifoRoot, ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group: the children it leaves running are found by it.
      detached: true,
    });
  }

  /** The host side (name) of each of the dead run's veths, from inside its namespaces, and the namespaces' CNI ids. */
  async function whatTheRunMade(e: TestEnv): Promise<{ ids: string[]; veths: string[] }> {
    const dir = join(e.stateDir, "net", e.namespace);
    const names = await readdir(dir).catch(() => [] as string[]);
    const ids = [...new Set(names.map((f) => f.replace(/\.json(\..*\.tmp)?$/, "")))];
    const veths: string[] = [];
    for (const id of ids) {
      const out = await run("nsenter", [`--net=${join(dir, id)}`, "ip", "-j", "link", "show", "eth0"]).then(
        (r) => r.stdout,
        () => "[]",
      );
      for (const l of JSON.parse(out) as { link_index?: number }[]) {
        if (l.link_index === undefined) continue;
        const name = readdirSync("/sys/class/net").find((i) => readFileSync(`/sys/class/net/${i}/ifindex`, "utf8").trim() === String(l.link_index));
        if (name) veths.push(name);
      }
    }
    return { ids, veths };
  }

  /** The IPAM reservations (address files) held by any of `ids`. */
  function reservationsOf(ids: string[]): string[] {
    const dir = join(DEFAULT_IPAM_DIR, DEFAULT_NETWORK_NAME);
    const held: string[] = [];
    for (const f of readdirSync(dir)) {
      if (f === "lock" || f.startsWith("last_reserved_ip")) continue;
      try {
        if (ids.includes(readFileSync(join(dir, f), "utf8").split(/\r?\n/)[0]!.trim())) held.push(f);
      } catch {
        // released meanwhile
      }
    }
    return held;
  }

  async function pruneAndAssertNothingLeft(e: TestEnv, made: { ids: string[]; veths: string[] }): Promise<void> {
    const pruned = await run(process.execPath, [CLI, "--root", e.stateDir, "--namespace", e.namespace, "prune"], {
      env: { ...process.env, CTREXEC_FIFO_ROOT: e.fifoRoot },
    });
    const why = `prune said:\n${pruned.stdout}`;
    assert.deepEqual(await readdir(join(e.stateDir, "net", e.namespace)).catch(() => []), [], `network namespace files or records left; ${why}`);
    assert.deepEqual(reservationsOf(made.ids), [], `IPAM reservations left; ${why}`);
    assert.deepEqual(
      made.veths.filter((v) => readdirSync("/sys/class/net").includes(v)),
      [],
      `veths left; ${why}`,
    );
    assert.deepEqual(await readdir(join(e.stateDir, "runs", e.namespace)).catch(() => []), [], `run dirs left; ${why}`);
    // Containers, tasks, FIFO dirs, mounts under the state dir (the netns mounts too), shims, bundles, runc state.
    await e.assertNoLeaks();
  }

  /** One crash: the CLI runs until `reachedWhen` resolves, is SIGKILLed, `thenLetGo` runs, then prune. */
  async function crashAt(moment: string, setUp: (dir: string) => Promise<{ env: Record<string, string>; script: string }>): Promise<void> {
    env = await createTestEnv(`crash-${++n}`);
    const e = env;
    const dir = await mkdtemp(join(wrappers, `${moment}-`));
    for (const f of ["reached", "go"]) await run("mkfifo", [join(dir, f)]);
    const { env: extraEnv, script } = await setUp(dir);
    const child = cli(e, ["run", "--network", "bridge", "--", "sh", "-c", script], extraEnv);
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise((r) => child.once("exit", r));
    let wrapperPid: number | undefined;
    if (moment === "run") {
      // The container's own output says it runs.
      await new Promise<void>((resolve, reject) => {
        let out = "";
        child.stdout!.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes("running\n")) resolve();
        });
        child.once("exit", () => reject(new Error(`the run ended before it ran: ${stderr}`)));
      });
    } else {
      // Opening the FIFO waits for the wrapper to be there.
      const reached = readFile(join(dir, "reached"), "utf8");
      const early = exited.then(() => {
        throw new Error(`the CLI ended before the wrapper was reached: ${stderr}`);
      });
      early.catch(() => {}); // raced below; once the wrapper is reached, the exit is ours
      wrapperPid = Number(await Promise.race([reached, early]));
    }
    process.kill(child.pid!, "SIGKILL");
    await exited;
    // Let the wrapper finish what the dead process started (the worst case: it completes after its owner died).
    if (moment !== "run") await letGo(dir);
    await untilGroupGone(child.pid!);
    // A wrapper containerd ran is not in the CLI's group: it ends when containerd kills it or when it is done.
    for (let i = 0; i < 600 && wrapperPid !== undefined && existsSync(`/proc/${wrapperPid}`); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(wrapperPid === undefined || !existsSync(`/proc/${wrapperPid}`), "the paused wrapper did not end");
    const made = await whatTheRunMade(e);
    if (moment === "cni-add") assert.ok(reservationsOf(made.ids).length > 0, "the paused ADD held no IPAM reservation: the moment was missed");
    await pruneAndAssertNothingLeft(e, made);
  }

  it("SIGKILL during network namespace creation", async () => {
    await crashAt("netns", async (dir) => {
      await wrapper(dir, "unshare");
      return { env: { PATH: `${dir}:${process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"}` }, script: "echo running; exec sleep 300" };
    });
  });

  it("SIGKILL during the CNI ADD (the address reserved, the ADD not done)", async () => {
    await crashAt("cni-add", async (dir) => {
      // The bridge plugin runs iptables after host-local reserved the address (masquerade), the firewall plugin after it.
      await wrapper(dir, "iptables");
      return { env: { PATH: `${dir}:${process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"}` }, script: "echo running; exec sleep 300" };
    });
  });

  it("SIGKILL during container creation (Tasks.Create, the shim not started yet)", async () => {
    await crashAt("task-create", async (dir) => {
      const launcher = await wrapper(dir, "shim", { onlyFor: "start" });
      return { env: { CTREXEC_SHIM_LAUNCHER: launcher }, script: "echo running; exec sleep 300" };
    });
  });

  it("SIGKILL during container creation (Tasks.Create, the shim started but not known to containerd)", async () => {
    await crashAt("shim-started", async (dir) => {
      const launcher = await wrapper(dir, "shim", { onlyFor: "start", after: true });
      return { env: { CTREXEC_SHIM_LAUNCHER: launcher }, script: "echo running; exec sleep 300" };
    });
  });

  it("SIGKILL during the run", async () => {
    await crashAt("run", async () => ({ env: {}, script: "echo running; exec sleep 300" }));
  });
});
