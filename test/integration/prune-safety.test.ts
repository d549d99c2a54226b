import assert from "node:assert/strict";
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { constants, existsSync, openSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { ContainerdClient } from "../../src/containerd/client.js";
import { jsonAny, SPEC_TYPE_URL } from "../../src/containerd/types.js";
import { DeadlineExceededError, PruneIncompleteError } from "../../src/errors.js";
import { LABEL } from "../../src/executor/labels.js";
import { isIdentifier } from "../../src/executor/orphan-shims.js";
import { prune } from "../../src/executor/prune.js";
import { createRunDir } from "../../src/executor/run-dirs.js";
import { defaultSpec } from "../../src/oci/defaults.js";
import { ownerId, processStartTime } from "../../src/util/owner.js";
import { createTestEnv, mountsUnder, shimsOf, type TestEnv } from "../helpers/env.js";

const bin = fileURLToPath(new URL("../../src/cli/ctrexec.mjs", import.meta.url));
const BUNDLES = "/run/containerd/io.containerd.runtime.v2.task";
const CONTAINERD = "/run/containerd/containerd.sock";

const ownerModule = JSON.stringify(new URL("../../src/util/owner.js", import.meta.url).href);
/** The owner id of a ctrexec process that has exited: certainly dead. */
function deadOwner(): string {
  const script = `const m = await import(${ownerModule}); process.stdout.write(m.ownerId());`;
  return execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
}

/** Waits (bounded) for a state to be reached: polls `read` until it returns a value. */
async function until<T>(what: string, read: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 300; i++) {
    const v = await read();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not reached`);
}

describe("prune safety", () => {
  let env: TestEnv;
  before(async () => {
    env = await createTestEnv("ps2");
  });
  afterEach(async () => {
    await env.assertNoLeaks();
  });
  after(async () => {
    await env.dispose();
  });

  const globals = (root = env.stateDir) => ["--namespace", env.namespace, "--root", root];
  const childEnv = () => ({ ...process.env, CTREXEC_FIFO_ROOT: env.fifoRoot, CONTAINERD_NAMESPACE: "" });
  function ctrexec(argv: string[], prefix: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
    const [file, ...args] = [...prefix, process.execPath, bin, ...argv];
    return new Promise((resolve) => {
      execFile(file!, args, { env: childEnv() }, (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
    });
  }

  it("prune from another pid namespace leaves a live run alone", async () => {
    const id = env.uniqueId("live");
    const run: ChildProcess = spawn(
      process.execPath,
      [bin, ...globals(), "run", "--rootfs", env.rootfs, "--network", "host", "--id", id, "sleep", "300"],
      {
        env: childEnv(),
        stdio: "ignore",
      },
    );
    const exited = new Promise<number | null>((r) => run.on("exit", (code) => r(code)));
    try {
      await until("the run's task running", async () =>
        (await env.client.tasks.list()).some((t) => t.id === id && t.status === "RUNNING") ? true : undefined,
      );
      // Its own pid namespace and /proc: the owner's pid means nothing there.
      const pr = await ctrexec([...globals(), "prune"], ["unshare", "--pid", "--fork", "--mount-proc"]);
      assert.equal(pr.code, 0, pr.stderr);
      assert.doesNotMatch(pr.stdout, new RegExp(id), pr.stdout);
      const task = (await env.client.tasks.list()).find((t) => t.id === id);
      assert.equal(task?.status, "RUNNING", "the run's process must still run");
      assert.ok(
        (await env.client.containers.list()).some((c) => c.id === id),
        "its container must still be there",
      );
      assert.equal(run.exitCode, null, "the run's ctrexec must still be running");
    } finally {
      await ctrexec([...globals(), "kill", id]);
      await exited;
    }
  });

  it("prune does not follow a run-dir label that climbs out of the runs dir", async () => {
    const id = env.uniqueId("label");
    const runs = join(env.stateDir, "runs", env.namespace);
    await mkdir(runs, { recursive: true });
    const victim = join(env.stateDir, "victim");
    await mkdir(victim);
    await writeFile(join(victim, "precious"), "x");
    // Starts with "<runs>/", as the old prefix check wanted, and names <state>/victim.
    const label = `${runs}/../../victim`;
    await env.client.containers.create({
      id,
      runtime: { name: "io.containerd.runc.v2" },
      spec: jsonAny(SPEC_TYPE_URL, defaultSpec(env.namespace, id)),
      labels: { [LABEL.owner]: deadOwner(), [LABEL.runDir]: label },
    });
    const removed = await prune({ client: env.client, stateDir: env.stateDir, fifoRoot: env.fifoRoot });
    assert.ok(removed.includes(`container ${id}`), removed.join("\n"));
    assert.ok(existsSync(join(victim, "precious")), "a directory outside the runs dir was removed");
    assert.ok(!removed.some((l) => l.startsWith("run dir ")), removed.join("\n"));
    await rm(victim, { recursive: true });
  });

  /**
   * Fault injection: the shim a killed client's Tasks.Create left, with no container or task record. The real
   * race (SIGKILL of `ctrexec run` while containerd is in Tasks.Create) leaves exactly this process, but only
   * now and then; here the shim is started the way containerd starts it: `containerd-shim-runc-v2 ... start`
   * in the task's bundle dir, which starts the long-running shim and prints its socket.
   */
  async function orphanShim(id: string, owner: string | undefined): Promise<InjectedShim> {
    const runDir = join(env.stateDir, "runs", env.namespace, id);
    if (owner !== undefined) {
      await mkdir(runDir, { recursive: true });
      await writeFile(join(runDir, "owner"), owner);
    }
    const bundle = join(BUNDLES, env.namespace, id);
    await mkdir(bundle, { recursive: true });
    await writeFile(join(bundle, "config.json"), JSON.stringify(defaultSpec(env.namespace, id)));
    // The shim writes its log to this FIFO, which containerd reads; without a reader it exits at once.
    execFileSync("mkfifo", [join(bundle, "log")]);
    const log = new Socket({ fd: openSync(join(bundle, "log"), constants.O_RDONLY | constants.O_NONBLOCK), readable: true, writable: false });
    log.resume();
    const before = new Set(shimsOf(env.namespace));
    const address = execFileSync(
      "containerd-shim-runc-v2",
      ["-namespace", env.namespace, "-address", CONTAINERD, "-publish-binary", "/usr/bin/containerd", "-id", id, "start"],
      { cwd: bundle, input: "", encoding: "utf8", env: { ...process.env, TTRPC_ADDRESS: `${CONTAINERD}.ttrpc` } },
    ).trim();
    const pid = shimsOf(env.namespace).find((p) => !before.has(p));
    const shim = { pid, socket: address.replace(/^unix:\/\//, ""), bundle, runDir, log };
    if (!pid) {
      await removeInjected(shim);
      assert.fail("the injected shim is not running");
    }
    return { ...shim, pid };
  }

  it("prune stops the shim a dead owner's run left without a task record, and only that one", async () => {
    const injected: InjectedShim[] = [];
    const inject = async (id: string, owner: string | undefined) => {
      const shim = await orphanShim(id, owner);
      injected.push(shim);
      return shim;
    };
    try {
      const id = env.uniqueId("orphan");
      const shim = await inject(id, deadOwner());
      // This process stands in for a live executor whose Tasks.Create is in progress: its shim is not an orphan.
      const ownedId = env.uniqueId("owned");
      const owned = await inject(ownedId, ownerId());
      // As seen after a real crash: the container record stayed (owner dead, no run dir left), no task.
      const recordedId = env.uniqueId("recorded");
      await env.client.containers.create({
        id: recordedId,
        runtime: { name: "io.containerd.runc.v2" },
        spec: jsonAny(SPEC_TYPE_URL, defaultSpec(env.namespace, recordedId)),
        labels: { [LABEL.owner]: deadOwner() },
      });
      const recorded = await inject(recordedId, undefined);

      const removed = await prune({ client: env.client, stateDir: env.stateDir, fifoRoot: env.fifoRoot });
      assert.ok(removed.includes(`orphaned shim of ${id} (pid ${shim.pid})`), removed.join("\n"));
      assert.ok(removed.includes(`orphaned shim of ${recordedId} (pid ${recorded.pid})`), removed.join("\n"));
      assert.deepEqual(shimsOf(env.namespace), [owned.pid], "the dead owner's shim must be gone, the live owner's kept");
      assert.equal(existsSync(shim.socket), false, "its socket file must be gone");
      assert.equal(existsSync(shim.bundle), false, "its bundle must be gone");
      assert.equal(existsSync(recorded.socket) || existsSync(recorded.bundle), false);
      assert.equal(existsSync(shim.runDir), false, "the run dir goes after the shim");
      assert.ok(!removed.some((l) => l.includes(ownedId)), removed.join("\n"));
      assert.ok(existsSync(owned.bundle) && existsSync(owned.runDir) && existsSync(owned.socket));
    } finally {
      for (const s of injected) await removeInjected(s);
      for (const c of await env.client.containers.list()) await env.client.containers.delete(c.id).catch(() => {});
    }
  });

  it("prune leaves a forgotten shim alone once a new run holds its id", async () => {
    const id = env.uniqueId("reused");
    const shim = await orphanShim(id, deadOwner());
    // A new `run --id` of the same id, begun after prune listed the records: containerd 1.6/1.7 would start its
    // task inside this very shim (it reuses a listening shim socket for the same namespace and id). Made at a
    // deterministic moment: right after the listing prune takes before the shims, which does not show it.
    let lists = 0;
    const containers = {
      ...env.client.containers,
      list: async (...args: Parameters<ContainerdClient["containers"]["list"]>) => {
        const listed = await env.client.containers.list(...args);
        if (++lists === 2) {
          await env.client.containers.create({
            id,
            runtime: { name: "io.containerd.runc.v2" },
            spec: jsonAny(SPEC_TYPE_URL, defaultSpec(env.namespace, id)),
            labels: { [LABEL.owner]: ownerId() },
          });
        }
        return listed;
      },
    };
    const racing = new Proxy(env.client, { get: (t, p) => (p === "containers" ? containers : Reflect.get(t, p, t)) }) as ContainerdClient;
    try {
      const removed = await prune({ client: racing, stateDir: env.stateDir, fifoRoot: env.fifoRoot });
      assert.ok(lists >= 2, "the listing before the shims was not taken");
      assert.ok(shimsOf(env.namespace).includes(shim.pid), "the shim a live run's container would start in was killed");
      assert.ok(!removed.some((l) => l.startsWith("orphaned shim")), removed.join("\n"));
      assert.ok(existsSync(shim.bundle) && existsSync(shim.socket), "the live id's bundle or shim socket was removed");
      const record = (await env.client.containers.list()).find((c) => c.id === id);
      assert.equal(record?.labels[LABEL.owner], ownerId(), "the live run's record must be the one there");
      // Nor is the run dir removed while a shim of the id may still run a container.
      assert.ok(existsSync(shim.runDir));
    } finally {
      await env.client.containers.delete(id).catch(() => {});
      await removeInjected(shim);
    }
  });

  it("prune keeps a run dir a new run of the same id made after prune read the old one's owner", async () => {
    const id = env.uniqueId("retaken");
    const runDir = join(env.stateDir, "runs", env.namespace, id);
    await mkdir(runDir, { recursive: true });
    await writeFile(join(runDir, "owner"), deadOwner());
    // Made deterministic: the listing of tasks prune takes right before removing run dirs (its second) is when
    // a new run of the id takes the name over, as createRunDir does with a dead owner's dir.
    let lists = 0;
    const tasks = {
      ...env.client.tasks,
      list: async (...args: Parameters<ContainerdClient["tasks"]["list"]>) => {
        if (++lists === 2) {
          await createRunDir(env.stateDir, env.namespace, id);
          await writeFile(join(runDir, "hosts"), "the live run's");
        }
        return env.client.tasks.list(...args);
      },
    };
    const racing = new Proxy(env.client, { get: (t, p) => (p === "tasks" ? tasks : Reflect.get(t, p, t)) }) as ContainerdClient;
    try {
      const removed = await prune({ client: racing, stateDir: env.stateDir, fifoRoot: env.fifoRoot });
      assert.equal(lists, 2);
      assert.equal(await readFile(join(runDir, "hosts"), "utf8").catch(() => "gone"), "the live run's", "the live run's dir was removed");
      assert.equal(await readFile(join(runDir, "owner"), "utf8"), ownerId());
      assert.ok(!removed.some((l) => l.startsWith("run dir")), removed.join("\n"));
      assert.deepEqual(
        (await readdir(join(env.stateDir, "runs", env.namespace))).filter((n) => n !== id),
        [],
        "nothing else left in the runs dir",
      );
    } finally {
      await rm(runDir, { recursive: true, force: true });
    }
  });

  it("prune removes what a prune that died left: a claim record and a dir moved for removal", async () => {
    const id = env.uniqueId("claimed");
    await env.client.containers.create({
      id,
      runtime: { name: "io.containerd.runc.v2" },
      spec: jsonAny(SPEC_TYPE_URL, defaultSpec(env.namespace, id)),
      labels: { [LABEL.owner]: deadOwner(), "ctrexec.prune-claim": "true" },
    });
    const runs = join(env.stateDir, "runs", env.namespace);
    const moved = join(runs, ".pruning.0123456789ab");
    await mkdir(join(moved, "upper"), { recursive: true });
    await writeFile(join(moved, "owner"), deadOwner());
    // And one a live run's: a prune that died before renaming it back; it stays, its owner may still want it.
    const live = join(runs, ".pruning.ba9876543210");
    await mkdir(live);
    await writeFile(join(live, "owner"), ownerId());
    try {
      const removed = await prune({ client: env.client, stateDir: env.stateDir, fifoRoot: env.fifoRoot });
      assert.deepEqual(removed.sort(), [`container ${id}`, `run dir ${moved}`]);
      assert.ok(existsSync(live));
    } finally {
      await env.client.containers.delete(id).catch(() => {});
      await rm(moved, { recursive: true, force: true });
      await rm(live, { recursive: true, force: true });
    }
  });

  interface InjectedShim {
    pid: number;
    socket: string;
    bundle: string;
    runDir: string;
    log: Socket;
  }

  /** Removes what orphanShim made, whatever the test did: the shim (which this test started), socket, dirs. */
  async function removeInjected(shim: Omit<InjectedShim, "pid"> & { pid: number | undefined }): Promise<void> {
    const pid = shim.pid;
    if (pid !== undefined && shimsOf(env.namespace).includes(pid)) {
      process.kill(pid, "SIGKILL");
      await until("the injected shim gone", async () => (shimsOf(env.namespace).includes(pid) ? undefined : true));
    }
    shim.log.destroy();
    await rm(shim.socket, { force: true });
    await rm(shim.bundle, { recursive: true, force: true });
    await rm(shim.runDir, { recursive: true, force: true });
    await rm(shim.bundle.replace("/run/containerd/", "/var/lib/containerd/"), { recursive: true, force: true });
  }

  /**
   * A process that mimics a shim's command line: a harmless program (it only waits for a signal) built here
   * under the shim's name, so that argv[0]'s basename is containerd-shim-runc-v2 as a container's process can
   * make it (any process's argv shows in the host's /proc, those inside containers included).
   */
  async function lookalikeShim(argv: string[]): Promise<ChildProcess> {
    const dir = join(env.stateDir, "lookalike");
    const bin = join(dir, "containerd-shim-runc-v2");
    if (!existsSync(bin)) {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, "pause.c"), "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n");
      execFileSync("cc", ["-o", bin, join(dir, "pause.c")]);
    }
    const child = spawn(bin, argv, { stdio: "ignore" });
    await new Promise<void>((resolve, reject) => child.once("spawn", resolve).once("error", reject));
    return child;
  }

  async function stop(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }

  it("prune takes no path from a process's command line, and stops only the real shim binary", async () => {
    // The reviewer's attack: a "shim" whose -id climbs out of every directory prune joins it to, to a place
    // with a forged owner file of a dead process. The old prune SIGKILLed it and removed the target (rm -rf).
    const marker = join(env.stateDir, `marker-${env.uniqueId()}`);
    await mkdir(join(marker, "deep"), { recursive: true });
    await writeFile(join(marker, "deep", "precious"), "keep");
    await writeFile(join(marker, "owner"), deadOwner());
    const climbing = "../".repeat(40) + marker.slice(1);
    // And a lookalike with a real dead run's id: the id is a known one, but the binary is not the shim.
    const deadId = env.uniqueId("deadrun");
    const deadRunDir = join(env.stateDir, "runs", env.namespace, deadId);
    await mkdir(deadRunDir, { recursive: true });
    await writeFile(join(deadRunDir, "owner"), deadOwner());
    const fakes = [
      await lookalikeShim(["-namespace", env.namespace, "-id", climbing, "-address", env.client.address]),
      await lookalikeShim(["-namespace", env.namespace, "-id", deadId, "-address", env.client.address]),
    ];
    try {
      const starts = fakes.map((f) => processStartTime(f.pid!));
      assert.ok(starts.every((s) => s !== undefined));
      const removed = await prune({ client: env.client, stateDir: env.stateDir, fifoRoot: env.fifoRoot });
      assert.equal(await readFile(join(marker, "deep", "precious"), "utf8"), "keep", "a directory a command line named was removed");
      assert.ok(existsSync(join(marker, "owner")));
      // Not killed: still the same, running (not a zombie) process.
      assert.deepEqual(
        fakes.map((f) => processStartTime(f.pid!)),
        starts,
        "a process that only looks like a shim was killed",
      );
      assert.ok(!removed.some((l) => l.startsWith("orphaned shim")), removed.join("\n"));
      assert.ok(removed.includes(`run dir ${deadRunDir}`), removed.join("\n"));
    } finally {
      for (const f of fakes) await stop(f);
      await rm(marker, { recursive: true, force: true });
    }
    // containerd's identifier rule, which every id and namespace prune makes a path from must pass.
    for (const bad of ["..", "a/b", climbing, "", ".x", "x.", "a..b", "x".repeat(77)]) assert.equal(isIdentifier(bad), false, bad);
    for (const good of ["a", deadId, "a.b-c_d", "x".repeat(76)]) assert.equal(isIdentifier(good), true, good);
  });

  it("prune is total: what it cannot remove is reported at the end, after everything else was pruned", async () => {
    const runs = join(env.stateDir, "runs", env.namespace);
    const stuck = join(runs, env.uniqueId("stuck"));
    const next = join(runs, env.uniqueId("next"));
    for (const dir of [stuck, next]) {
      await mkdir(join(dir, "upper"), { recursive: true });
      await writeFile(join(dir, "owner"), deadOwner());
      await writeFile(join(dir, "upper", "file"), "x");
    }
    // A real failure: an immutable file (as a container with CAP_LINUX_IMMUTABLE could leave) cannot be unlinked.
    execFileSync("chattr", ["+i", join(stuck, "upper", "file")]);
    const fifo = join(env.fifoRoot, env.namespace, `${env.uniqueId("gone")}-0123456789ab`);
    await mkdir(fifo, { recursive: true });
    const lease = env.uniqueId("lease");
    await env.client.leases.create(lease, { [LABEL.owner]: deadOwner() });
    let moved: string | undefined;
    try {
      const err: unknown = await prune({ client: env.client, stateDir: env.stateDir, fifoRoot: env.fifoRoot }).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.deepEqual(
        [existsSync(next), existsSync(fifo), (await env.client.leases.list()).some((l) => l.id === lease)],
        [false, false, false],
        "the rest must be pruned",
      );
      assert.ok(err instanceof PruneIncompleteError, `expected a PruneIncompleteError, got ${String(err)}`);
      assert.deepEqual(
        err.failures.map((f) => f.what),
        [`run dir ${stuck}`],
      );
      assert.match(err.message, /run ctrexec prune again/);
      for (const line of [`run dir ${next}`, `FIFO dir ${fifo}`, `lease ${lease}`])
        assert.ok(err.removed.includes(line), `${line} missing: ${err.removed.join("\n")}`);
      // Moved out of its id's way (the id is free for new runs), to the name prune removes run dirs under.
      assert.equal(existsSync(stuck), false);
      assert.equal((await readdir(runs)).length, 1);
      moved = join(runs, (await readdir(runs))[0]!);
      assert.match(moved, /\/\.pruning\.[0-9a-f]{12}$/);
      assert.ok(existsSync(join(moved, "upper", "file")));
    } finally {
      execFileSync("chattr", ["-i", join(moved ?? stuck, "upper", "file")]);
      await env.client.leases.delete(lease).catch(() => {});
    }
    // Once its cause is gone, the next prune removes it (a prune that died after the move leaves the same).
    assert.deepEqual(await prune({ client: env.client, stateDir: env.stateDir, fifoRoot: env.fifoRoot }), [`run dir ${moved}`]);
  });

  it("prune keeps the run dir of a dead owner's container whose task could not be deleted", async () => {
    const id = env.uniqueId("undeletable");
    const runDir = join(env.stateDir, "runs", env.namespace, id);
    await mkdir(join(runDir, "upper"), { recursive: true });
    await writeFile(join(runDir, "owner"), deadOwner());
    await writeFile(join(runDir, "upper", "written"), "by the container");
    await env.client.containers.create({
      id,
      runtime: { name: "io.containerd.runc.v2" },
      spec: jsonAny(SPEC_TYPE_URL, defaultSpec(env.namespace, id)),
      labels: { [LABEL.owner]: deadOwner(), [LABEL.runDir]: runDir },
    });
    // Fault injection: containerd does not answer for this task in time (a real server does not on demand).
    const fail = () => Promise.reject(new DeadlineExceededError("injected: deadline exceeded"));
    const tasks = { ...env.client.tasks, delete: fail, get: fail };
    const stalled = new Proxy(env.client, { get: (t, p) => (p === "tasks" ? tasks : Reflect.get(t, p, t)) }) as ContainerdClient;
    try {
      const err: unknown = await prune({ client: stalled, stateDir: env.stateDir, fifoRoot: env.fifoRoot }).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.equal(
        await readFile(join(runDir, "upper", "written"), "utf8").catch(() => "gone"),
        "by the container",
        "the run dir went while its task may run",
      );
      assert.ok(err instanceof PruneIncompleteError, `expected a PruneIncompleteError, got ${String(err)}`);
      assert.deepEqual(
        err.failures.map((f) => f.what),
        [`task ${id}`],
      );
      assert.ok(
        (await env.client.containers.list()).some((c) => c.id === id),
        "the record stays for the next prune",
      );
      // With the task known gone, the next prune takes both.
      const removed = await prune({ client: env.client, stateDir: env.stateDir, fifoRoot: env.fifoRoot });
      assert.deepEqual(removed.sort(), [`container ${id}`, `run dir ${runDir}`]);
    } finally {
      await env.client.containers.delete(id).catch(() => {});
      await rm(runDir, { recursive: true, force: true });
    }
  });

  it("a state dir whose path has a space leaves no mount behind a run", async () => {
    // The default root: each run gets an overlay mounted in its run dir, found again through mountinfo.
    const root = await mkdtemp(join(tmpdir(), "ctrexec-test-ps state dir-"));
    try {
      const r = await ctrexec([...globals(root), "run", "--network", "host", "true"]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(mountsUnder(root), [], "mounts left under the state dir");
    } finally {
      for (const m of mountsUnder(root).reverse()) execFileSync("umount", ["-l", m]);
      await rm(root, { recursive: true, force: true });
    }
  });
});
