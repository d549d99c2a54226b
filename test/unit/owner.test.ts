import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { hostname } from "node:os";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { bootId, ownerAlive, ownerId, processStartTime } from "../../src/util/owner.js";

/** Whether this test runs where /proc shows every process (the initial pid namespace, as root). */
const seesAll = statSync("/proc/self/ns/pid").ino === 0xeffffffc && process.getuid?.() === 0;

const ownerModule = fileURLToPath(new URL("../../src/util/owner.js", import.meta.url));

/** This process's owner string with some fields replaced (host/pid/start/boot/pidns/timens). */
function ownerWith(fields: { host?: string; pid?: number; start?: string; boot?: string; pidNs?: string }): string {
  const f = ownerId().split("/");
  const [pid, start, boot, pidNs, timeNs] = f.slice(-5);
  const host = f.slice(0, -5).join("/");
  return [fields.host ?? host, fields.pid ?? pid, fields.start ?? start, fields.boot ?? boot, fields.pidNs ?? pidNs, timeNs].join("/");
}

/**
 * ownerAlive as a process in a new pid namespace with its own /proc sees it: "true", "false" or "undefined";
 * `ended`: pid namespaces to give it as ended on this boot.
 */
function aliveFromNewPidNamespace(owner: string, ended?: string[]): string {
  const script = `const m = await import(${JSON.stringify(ownerModule)});
    const ended = process.argv[2] ? { bootId: m.bootId(), namespaces: new Set(JSON.parse(process.argv[2])) } : undefined;
    process.stdout.write(String(m.ownerAlive(process.argv[1], ended)));`;
  const argv = [process.execPath, "--input-type=module", "-e", script, owner, ...(ended ? [JSON.stringify(ended)] : [])];
  return execFileSync("unshare", ["--pid", "--fork", "--mount-proc", ...argv], { encoding: "utf8" });
}

const children: ChildProcess[] = [];
function sleeper(argv: string[] = ["sleep", "300"]): ChildProcess {
  const c = spawn(argv[0]!, argv.slice(1), { stdio: "ignore" });
  children.push(c);
  return c;
}
async function stop(c: ChildProcess): Promise<void> {
  if (c.exitCode === null && c.signalCode === null) {
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    await exited;
  }
}
/** Waits (bounded) for `read` to give a value: the state a spawned process reaches, not a time. */
async function until<T>(read: () => T | undefined): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = read();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("state not reached");
}

describe("owner liveness", () => {
  after(async () => {
    for (const c of children) await stop(c);
  });

  it("records the boot and the pid and time namespaces with the pid and start time", () => {
    const f = ownerId().split("/").slice(-5);
    assert.equal(f[0], String(process.pid));
    assert.equal(f[1], processStartTime(process.pid));
    assert.equal(f[2], readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim());
    const ns = statSync("/proc/self/ns/pid");
    assert.equal(f[3], `${ns.dev}:${ns.ino}`);
  });

  it("same pid namespace: alive while the pid has its start time, dead once it is gone", async () => {
    assert.equal(ownerAlive(ownerId()), true);
    const c = sleeper();
    const start = await until(() => processStartTime(c.pid!));
    const owner = ownerWith({ pid: c.pid!, start });
    assert.equal(ownerAlive(owner), true);
    assert.equal(ownerAlive(ownerWith({ pid: c.pid!, start: String(Number(start) + 1) })), false, "a reused pid is not the owner");
    await stop(c);
    assert.equal(ownerAlive(owner), false);
  });

  it("an owner in a pid namespace the caller cannot see is unknown, never dead", () => {
    // The bug: `unshare --pid --fork --mount-proc ctrexec prune` looked the host's pids up in its own /proc.
    assert.equal(aliveFromNewPidNamespace(ownerId()), "undefined");
    assert.equal(aliveFromNewPidNamespace(ownerWith({ pid: 1 })), "undefined", "pid 1 there is not our pid 1");
  });

  it("an owner in a pid namespace recorded as ended on this boot is dead, even where /proc cannot show it", () => {
    // A rootless daemon's runs, seen from the next daemon (rootless/layout.ts records the namespaces that ended).
    const ns = statSync("/proc/self/ns/pid");
    const gone = ownerWith({ pidNs: "3:999999" });
    assert.equal(aliveFromNewPidNamespace(gone), "undefined");
    assert.equal(aliveFromNewPidNamespace(gone, ["3:999999"]), "false");
    assert.equal(aliveFromNewPidNamespace(gone, ["3:999998"]), "undefined", "another namespace ended");
    const other = { bootId: "another-boot", namespaces: new Set(["3:999999"]) };
    assert.equal(ownerAlive(ownerId(), other), true);
    // Our own namespace's inode recorded as ended (an inode reused by a later namespace): ours is decided by pid.
    assert.equal(ownerAlive(ownerId(), { bootId: bootId(), namespaces: new Set([`${ns.dev}:${ns.ino}`]) }), true);
  });

  it("an owner in a pid namespace the caller can see is decided by its pid there", async () => {
    // --kill-child: the inner sleep dies with unshare, should the test stop early.
    const u = sleeper(["unshare", "--pid", "--fork", "--kill-child", "sleep", "300"]);
    // unshare's forked child is pid 1 of the new namespace.
    const inner = await until(() => {
      const kids = readFileSync(`/proc/${u.pid}/task/${u.pid}/children`, "utf8").trim();
      return kids ? Number(kids.split(" ")[0]) : undefined;
    });
    const ns = statSync(`/proc/${inner}/ns/pid`);
    const start = await until(() => processStartTime(inner));
    const owner = ownerWith({ pid: 1, start, pidNs: `${ns.dev}:${ns.ino}` });
    assert.equal(ownerAlive(owner), true);
    assert.equal(ownerAlive(ownerWith({ pid: 2, start, pidNs: `${ns.dev}:${ns.ino}` })), false, "no pid 2 in that namespace");
    // unshare reaps it and exits: no zombie is left to look alive.
    const exited = new Promise((r) => u.once("exit", r));
    process.kill(inner, "SIGKILL");
    await exited;
    // From the initial pid namespace every namespace is visible: one with no process left is gone.
    assert.equal(ownerAlive(owner), seesAll ? false : undefined);
  });

  it("another boot of this host is dead; another machine is unknown; a container's hostname on this kernel is us", () => {
    const other = "00000000-0000-4000-8000-000000000000";
    assert.equal(ownerAlive(ownerWith({ boot: other })), false);
    assert.equal(ownerAlive(ownerWith({ boot: other, host: `not-${hostname()}` })), undefined);
    assert.equal(ownerAlive(ownerWith({ host: `not-${hostname()}` })), true, "same boot id: same kernel, whatever the hostname");
  });

  it("reads the older host/pid/starttime form: decided on the host, unknown from a pid namespace that cannot see it", async () => {
    const c = sleeper();
    const start = await until(() => processStartTime(c.pid!));
    const old = `${hostname()}/${c.pid}/${start}`;
    assert.equal(ownerAlive(old), true);
    assert.equal(ownerAlive(`not-${hostname()}/${c.pid}/${start}`), undefined);
    const self = `${hostname()}/${process.pid}/${processStartTime(process.pid)}`;
    assert.equal(aliveFromNewPidNamespace(self), "undefined");
    await stop(c);
    // The initial pid namespace, as root, sees every process: none has that pid and start time any more.
    assert.equal(ownerAlive(old), seesAll ? false : undefined);
  });

  it("anything else is unknown", () => {
    for (const s of ["", "garbage", "host/x/1", `${hostname()}/1`]) assert.equal(ownerAlive(s), undefined, s);
  });
});
