import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FailedPreconditionError } from "../../src/errors.js";
import { checkRootlessRun, withRootlessDefaults } from "../../src/executor/rootless-mode.js";
import { enterArgs, findRootless, inUserNamespace, type RootlessRecord, readRecord, rootlessLayout } from "../../src/rootless/layout.js";

const scratch = mkdtempSync(join(tmpdir(), "ctrexec-rootless-layout-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

function envFor(name: string): NodeJS.ProcessEnv {
  const rt = join(scratch, name, "run");
  mkdirSync(join(rt, "ctrexec"), { recursive: true });
  return { XDG_RUNTIME_DIR: rt, HOME: join(scratch, name, "home") };
}

function writeRecord(env: NodeJS.ProcessEnv, record: Partial<RootlessRecord> | string): void {
  const file = rootlessLayout(env).recordFile;
  writeFileSync(file, typeof record === "string" ? record : JSON.stringify(record));
}

function record(over: Partial<RootlessRecord>): RootlessRecord {
  return {
    version: 1,
    rootlesskitPid: 1,
    childPid: 1,
    network: "host",
    userns: 1,
    address: "/run/user/1000/containerd/containerd.sock",
    startedAt: "2026-12-05T00:00:00.000Z",
    ...over,
  };
}

/** A process in a user namespace of its own: a daemon's child as the host sees it. */
async function otherUserns(): Promise<{ child: ChildProcess; ino: number }> {
  const child = spawn("unshare", ["-U", "sleep", "60"], { stdio: "ignore" });
  const pid = child.pid!;
  const own = statSync("/proc/self/ns/user").ino;
  for (let i = 0; i < 500; i++) {
    const ino = statSync(`/proc/${pid}/ns/user`).ino;
    if (ino !== own) return { child, ino };
    await new Promise((r) => setTimeout(r, 10));
  }
  child.kill("SIGKILL");
  throw new Error("unshare -U never entered its namespace");
}

async function killAndWait(child: ChildProcess): Promise<void> {
  const gone = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await gone;
}

describe("rootlessLayout", () => {
  it("takes XDG_RUNTIME_DIR and XDG_DATA_HOME, else /run/user/<uid> and HOME's .local/share, as nerdctl", () => {
    const l = rootlessLayout({ XDG_RUNTIME_DIR: "/r", XDG_DATA_HOME: "/d" });
    assert.equal(l.runtimeDir, "/r");
    assert.equal(l.address, "/r/containerd/containerd.sock");
    assert.equal(l.kitStateDir, "/r/containerd-rootless");
    assert.equal(l.recordFile, "/r/ctrexec/rootless.json");
    assert.equal(l.endedFile, "/r/ctrexec/ended-pid-namespaces");
    assert.equal(l.containerdRoot, "/d/containerd");
    assert.equal(l.stateDir, "/d/ctrexec");
    assert.equal(l.fifoRoot, "/r/ctrexec/fifo");
    const d = rootlessLayout({ HOME: "/home/u", XDG_RUNTIME_DIR: "relative" });
    assert.equal(d.runtimeDir, `/run/user/${process.getuid!()}`, "a relative XDG_RUNTIME_DIR is ignored, as the spec says");
    assert.equal(d.stateDir, "/home/u/.local/share/ctrexec");
  });
});

describe("readRecord", () => {
  it("reads a well-formed record and takes anything else for no daemon", () => {
    const env = envFor("read");
    const layout = rootlessLayout(env);
    assert.equal(readRecord(layout), undefined, "no file");
    writeRecord(env, record({ rootlesskitPid: 10, childPid: 11, userns: 12 }));
    assert.deepEqual(readRecord(layout), record({ rootlesskitPid: 10, childPid: 11, userns: 12 }));
    for (const bad of [
      "not json",
      "null",
      JSON.stringify(record({ version: 2 as 1 })),
      JSON.stringify(record({ childPid: 0 })),
      JSON.stringify(record({ userns: -1 })),
      JSON.stringify(record({ network: "bridge" as "host" })),
      JSON.stringify({ ...record({}), address: 5 }),
    ]) {
      writeRecord(env, bad);
      assert.equal(readRecord(layout), undefined, bad);
    }
  });
});

describe("findRootless", () => {
  it("finds a live daemon outside its namespace, and none once its child is gone or its pid names another namespace", async () => {
    const env = envFor("find");
    const { child, ino } = await otherUserns();
    try {
      writeRecord(env, record({ childPid: child.pid!, userns: ino }));
      const found = findRootless(env);
      assert.ok(found);
      assert.equal(found.inside, false);
      assert.equal(found.record.childPid, child.pid);
      writeRecord(env, record({ childPid: child.pid!, userns: ino + 1 }));
      assert.equal(findRootless(env), undefined, "a reused pid: its namespace is another");
      writeRecord(env, record({ childPid: child.pid!, userns: ino }));
    } finally {
      await killAndWait(child);
    }
    assert.equal(findRootless(env), undefined, "the daemon is gone");
  });

  it("takes a record naming this process's own user namespace, outside any, for no daemon (or it would be 'inside')", () => {
    const env = envFor("own-userns");
    writeRecord(env, record({ childPid: 1, userns: statSync("/proc/self/ns/user").ino }));
    assert.equal(readRecord(rootlessLayout(env)), undefined);
    assert.equal(findRootless(env), undefined);
  });

  it("reads only this user's own record, which no one else can write", { skip: process.getuid?.() !== 0 && "needs root (chown)" }, () => {
    const env = envFor("owner");
    writeRecord(env, record({}));
    const file = rootlessLayout(env).recordFile;
    assert.ok(readRecord(rootlessLayout(env)));
    chmodSync(file, 0o666);
    assert.equal(readRecord(rootlessLayout(env)), undefined, "writable by others");
    chmodSync(file, 0o644);
    chownSync(file, 65534, 65534);
    assert.equal(readRecord(rootlessLayout(env)), undefined, "another user's");
    rmSync(file);
    symlinkSync(join(scratch, "elsewhere.json"), file);
    writeFileSync(join(scratch, "elsewhere.json"), JSON.stringify(record({})));
    assert.equal(readRecord(rootlessLayout(env)), undefined, "a symlink");
  });
});

describe("enterArgs", () => {
  it("enters user, mount and pid namespaces, and the network only where rootlesskit made one", () => {
    const layout = rootlessLayout({ XDG_RUNTIME_DIR: "/r" });
    assert.deepEqual(enterArgs({ layout, record: record({ childPid: 42 }), inside: false }), [
      "--preserve-credentials",
      "-U",
      "-m",
      "-p",
      "-t",
      "42",
    ]);
    assert.deepEqual(enterArgs({ layout, record: record({ childPid: 42, network: "slirp4netns" }), inside: false }).slice(-1), ["-n"]);
  });
});

describe("withRootlessDefaults", () => {
  it("leaves root's options alone: the system containerd", { skip: process.getuid?.() !== 0 || inUserNamespace() }, () => {
    const env = envFor("root");
    writeRecord(env, record({ childPid: process.pid, userns: statSync("/proc/self/ns/user").ino }));
    assert.deepEqual(withRootlessDefaults({ namespace: "x" }, env), { namespace: "x" });
  });

  it("an explicit socket with rootless: true gets the layout's state dir and FIFO root, and the host network by default", () => {
    const env = envFor("explicit");
    const o = withRootlessDefaults({ address: "/s.sock", rootless: true }, env);
    const layout = rootlessLayout(env);
    assert.equal(o.root, layout.stateDir);
    assert.equal(o.fifoRoot, layout.fifoRoot);
    assert.equal(o.defaultNetwork, "host");
    assert.equal(withRootlessDefaults({ address: "/s.sock", rootless: true, root: "/mine" }, env).root, "/mine", "given options win");
  });

  // In a user namespace of its own (unshare -U -r), a process is "unprivileged" as in a rootless daemon's.
  const helper = fileURLToPath(new URL("../helpers/rootless-defaults-child.js", import.meta.url));
  const inUserns = (env: NodeJS.ProcessEnv): { code?: string; message?: string; options?: Record<string, unknown> } =>
    JSON.parse(execFileSync("unshare", ["-U", "-r", process.execPath, helper], { env: { ...env, PATH: process.env["PATH"] }, encoding: "utf8" }));

  it("in a user namespace: none runs -> FailedPreconditionError saying how to start one", () => {
    const r = inUserns({ ...envFor("none") });
    assert.equal(r.code, "FAILED_PRECONDITION");
    assert.match(r.message!, /ctrexec rootless start/);
  });

  it("in the daemon's user namespace: its socket, rootless mode, the layout's dirs", () => {
    const env = { ...envFor("in"), CTREXEC_TEST_RECORD_SELF: "1" };
    const r = inUserns(env);
    const layout = rootlessLayout(env);
    assert.deepEqual(r.options, {
      address: "/run/user/1000/containerd/containerd.sock",
      rootless: true,
      root: layout.stateDir,
      fifoRoot: layout.fifoRoot,
      defaultNetwork: "host",
    });
  });

  it("outside a live daemon's namespaces -> FailedPreconditionError saying to enter them", () => {
    const r = inUserns({ ...envFor("out"), CTREXEC_TEST_RECORD_CHILD: "1" });
    assert.equal(r.code, "FAILED_PRECONDITION");
    assert.match(r.message!, /ctrexec rootless enter -- <command>/);
  });
});

describe("checkRootlessRun", () => {
  const refused = (r: Parameters<typeof checkRootlessRun>[0]): string => {
    try {
      checkRootlessRun(r);
    } catch (err) {
      assert.ok(err instanceof FailedPreconditionError, String(err));
      return err.message;
    }
    return "";
  };
  it("refuses limits, a cgroup parent and the bridge before anything is made; takes the rest", () => {
    const v1 = !statExists("/sys/fs/cgroup/cgroup.controllers");
    const limits = refused({ resources: { memory: 64 << 20 } });
    assert.match(limits, v1 ? /cgroup v1 cannot delegate limits to an unprivileged user; use cgroup v2 or run as root/ : /cgroup v2/);
    assert.match(refused({ cgroupParent: "/p" }), /cgroup parent/);
    assert.match(refused({ network: "bridge" }), /use network "host"/);
    assert.equal(refused({ resources: {} }), "");
    assert.equal(refused({ network: "host" }), "");
    assert.equal(refused({ network: "none" }), "");
  });
});

function statExists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}
