import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { rootlessStatus } from "../../src/rootless/daemon.js";
import { bootId, fileIdentity, ownerAlive, processStartTime } from "../../src/util/owner.js";

/*
 * Rootless mode's records (issue #22), from its adversarial review. Namespace inodes are handed out lowest-free-first and reused as soon as a
 * namespace ends: on this machine a restarted rootless daemon got the very pid namespace inode the stopped one had,
 * which `ctrexec rootless stop` had just written to ended-pid-namespaces. A namespace listed as ended may therefore
 * be a live one; an owner in it must not be taken for dead while one of its processes can be seen.
 */

async function until<T>(f: () => T | undefined, ms = 5_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(20);
  }
}

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

describe("ended pid namespaces and inode reuse", () => {
  it("an owner in a live pid namespace whose inode is listed as ended is not dead", {
    skip: process.getuid?.() !== 0 ? "needs root (unshare --pid)" : false,
  }, async () => {
    const u = spawn("unshare", ["--pid", "--fork", "--kill-child", "sleep", "300"], { stdio: "ignore" });
    children.push(u);
    const inner = await until(() => {
      const kids = readFileSync(`/proc/${u.pid}/task/${u.pid}/children`, "utf8").trim();
      return kids ? Number(kids.split(" ")[0]) : undefined;
    });
    const ns = statSync(`/proc/${inner}/ns/pid`);
    const pidNs = `${ns.dev}:${ns.ino}`;
    const start = await until(() => processStartTime(inner));
    const timeNs = fileIdentity("/proc/self/ns/time") ?? "-";
    // The owner is pid 1 of that namespace, alive and visible from here.
    const owner = `${hostname()}/1/${start}/${bootId()}/${pidNs}/${timeNs}`;
    assert.equal(ownerAlive(owner), true, "alive without an ended list");
    // The same inode recorded as ended (by an earlier daemon that had it): the live process still decides.
    assert.notEqual(ownerAlive(owner, { bootId: bootId(), namespaces: new Set([pidNs]) }), false);
  });
});

describe("host root and a user's record (status)", () => {
  it("host root's `rootless status` does not take a user's record for a daemon (pid 1, root's socket)", {
    skip: process.getuid?.() !== 0 ? "needs host root" : false,
  }, async () => {
    // What any user can write in its own runtime dir; root meets it with `su` (no -l) or `sudo -E`, which keep
    // XDG_RUNTIME_DIR. stop and enter refuse host root (c948a6b); status reads the record, probes the socket it
    // names as root and prints its strings (control characters included) to root's terminal.
    const dir = mkdtempSync(join(tmpdir(), "rv-review-"));
    try {
      mkdirSync(join(dir, "ctrexec"));
      const record = {
        version: 1,
        rootlesskitPid: 1,
        childPid: 1,
        network: "host",
        userns: statSync("/proc/self/ns/user").ino,
        address: "/run/containerd/containerd.sock",
        startedAt: "\u001b]0;title\u0007",
      };
      writeFileSync(join(dir, "ctrexec", "rootless.json"), JSON.stringify(record));
      const s = await rootlessStatus({ env: { XDG_RUNTIME_DIR: dir } }).catch((err: unknown) => err);
      if (s instanceof Error) return; // refused: fine
      assert.notEqual((s as { state: string }).state, "running", "root reported pid 1 as the user's rootless daemon");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
