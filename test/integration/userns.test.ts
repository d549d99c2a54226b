import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { FailedPreconditionError, InvalidArgumentError } from "../../src/errors.js";
import { bindMountable, tmpfsMountable } from "../../src/executor/mountables.js";
import { prune } from "../../src/executor/prune.js";
import type { Mountable, MountSpec, ProcessMeta, RunRequest } from "../../src/executor/types.js";
import { HOST_RANGES_BASE, listRanges } from "../../src/executor/userns-ranges.js";
import { withImageDefaults } from "../../src/image/image.js";
import { imageMountable, snapshotMountable } from "../../src/image/mountables.js";
import { resolveImage } from "../../src/image/resolve.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";
import { treeEntries, writeOciArchive } from "../helpers/oci-image.js";
import { Collect } from "../helpers/streams.js";

const run = promisify(execFile);
const CLI = fileURLToPath(new URL("../../src/cli/ctrexec.mjs", import.meta.url));
const POOL = { start: 0x20000000, size: 65536 * 64 };

/** The host-wide table's entries of `namespace`'s runs. */
const rangesOf = (namespace: string) => listRanges(HOST_RANGES_BASE).filter((e) => e.namespace === namespace);

/** The first host id of `/proc/self/uid_map`'s line "0 HOST SIZE" as a container printed it. */
function mappedStart(uidMap: string): number {
  const [c, h, s] = uidMap.trim().split(/\s+/).map(Number);
  assert.equal(c, 0);
  assert.equal(s, 65536);
  return h!;
}

/**
 * A run that stops at a point: the container prints `ready` (after `script`) and waits for a line on stdin;
 * the test looks at the host meanwhile, then lets it finish.
 */
function paused(env: ExecutorEnv, req: Omit<RunRequest, "process">, meta: Partial<ProcessMeta>, script: string) {
  const stdin = new PassThrough();
  const stdout = new Collect();
  const stderr = new Collect();
  let onReady: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  const origWrite = stdout._write.bind(stdout);
  stdout._write = (chunk, enc, cb) => {
    origWrite(chunk, enc, cb);
    if (stdout.text.includes("ready\n")) onReady();
  };
  const done = env.executor.run({
    ...req,
    process: { meta: { args: ["sh", "-c", `${script}; echo ready; read x`], ...meta } as ProcessMeta, stdin, stdout, stderr },
  });
  done.catch(() => onReady());
  return {
    ready,
    stdout,
    stderr,
    finish: async () => {
      stdin.end("go\n");
      return done;
    },
  };
}

describe("a user namespace per run (userns)", () => {
  let env: ExecutorEnv;
  let scratch: string;
  let image: string;

  before(async () => {
    env = await createExecutorEnv("userns", { userns: { pool: POOL } });
    scratch = await mkdtemp(join(tmpdir(), "ctrexec-test-userns-"));
    image = `docker.io/ctrexec/userns-test:${process.pid}`;
    const base = await treeEntries(env.rootfs, (rel) => rel === "etc/hosts" || rel === "etc/resolv.conf");
    const archive = join(scratch, "image.tar");
    await writeOciArchive(archive, image, [base, [{ type: "file", path: "second.txt", content: "second\n" }]], {
      Env: ["PATH=/bin"],
      WorkingDir: "/work/dir",
      User: "user",
    });
    await run("ctr", ["-n", env.namespace, "images", "import", "--no-unpack", archive]);
  });
  afterEach(async () => {
    await env.assertClean();
    assert.deepEqual(rangesOf(env.namespace), [], "user namespace ranges left");
  });
  after(async () => {
    await env.client.images.delete(image).catch(() => {});
    for (const s of await env.client.snapshots.list("overlayfs").catch(() => [])) {
      await env.client.snapshots.remove({ snapshotter: "overlayfs", key: s.name }).catch(() => {});
    }
    await env.dispose();
    await rm(scratch, { recursive: true, force: true });
  });

  async function output(req: Omit<RunRequest, "process">, meta: Partial<ProcessMeta>): Promise<string> {
    const stdout = new Collect();
    const stderr = new Collect();
    try {
      await env.executor.run({ ...req, process: { meta: meta as ProcessMeta, stdout, stderr } });
    } catch (err) {
      throw Object.assign(err as Error, { message: `${(err as Error).message}; stderr: ${stderr.text}` });
    }
    return stdout.text;
  }

  it("default root: uid 0 inside, mapped to a range of the pool, with root's powers over its whole root", async () => {
    const out = await output(
      {},
      {
        userns: "auto",
        args: [
          "sh",
          "-c",
          "id -u; cat /proc/self/uid_map; stat -c %u:%g / /bin/busybox /etc/passwd; echo x > /etc/new && chown 1000:1000 /etc/new && mkdir /bin/d && rm /bin/ls && stat -c %u:%g /etc/new",
        ],
      },
    );
    const lines = out.trim().split("\n");
    assert.equal(lines[0], "0");
    const start = mappedStart(lines[1]!);
    assert.ok(start >= POOL.start && start + 65536 <= POOL.start + POOL.size && (start - POOL.start) % 65536 === 0, `range ${start}`);
    assert.deepEqual(lines.slice(2), ["0:0", "0:0", "0:0", "1000:1000"]);
    // The shared built-in rootfs was not touched.
    assert.ok(!existsSync(join(env.rootfs, "etc/new")));
    assert.ok(existsSync(join(env.rootfs, "bin/ls")));
  });

  it("directory root: writes land in the run's upper layer as the mapped ids, never in the shared directory", async () => {
    const dir = join(scratch, "dirroot");
    await run("cp", ["-a", env.rootfs, dir]);
    const p = paused(
      env,
      { root: { source: bindMountable(dir) } },
      { userns: "auto" },
      "echo x > /etc/new; chown 1000:1000 /etc/new; mkdir -p /var/made",
    );
    await p.ready;
    const runs = join(env.stateDir, "runs", env.namespace);
    const [runDir] = readdirSync(runs);
    const upper = join(runs, runDir!, "userns-root", "upper");
    const [range] = rangesOf(env.namespace);
    assert.ok(range, "a range is recorded while the run lives");
    const uidStart = range.uid[0];
    const gidStart = range.gid[0];
    assert.deepEqual([statSync(join(upper, "etc/new")).uid, statSync(join(upper, "etc/new")).gid], [uidStart + 1000, gidStart + 1000]);
    assert.equal(statSync(join(upper, "var/made")).uid, uidStart);
    assert.ok(!existsSync(join(dir, "etc/new")) && !existsSync(join(dir, "var/made")), "the shared directory is unchanged");
    await p.finish();
  });

  it("explicit maps are used as given", async () => {
    const out = await output(
      {},
      {
        userns: { uidMap: [{ containerId: 0, hostId: 0x30000000, size: 65536 }], gidMap: [{ containerId: 0, hostId: 0x30010000, size: 65536 }] },
        args: ["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map"],
      },
    );
    assert.deepEqual(
      out
        .trim()
        .split("\n")
        .map((l) => l.trim().split(/\s+/).map(Number)),
      [
        [0, 0x30000000, 65536],
        [0, 0x30010000, 65536],
      ],
    );
  });

  it("a host file of host root's, bind-mounted read-write, cannot be modified; mknod fails", async () => {
    const dir = join(scratch, "hostfiles");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "file"), "host\n", { mode: 0o644 });
    chownSync(dir, 0, 0);
    chmodSync(dir, 0o755);
    const out = await output(
      { mounts: [{ source: bindMountable(dir), dest: "/m" }] },
      {
        userns: "auto",
        args: [
          "sh",
          "-c",
          "stat -c %u /m/file; echo pwned >> /m/file && echo WROTE; touch /m/new && echo CREATED; chmod 777 /m/file && echo CHMOD; mknod /tmp/null c 1 3 && echo MKNOD; echo done",
        ],
      },
    );
    assert.equal(out, "65534\ndone\n");
    assert.equal(readFileSync(join(dir, "file"), "utf8"), "host\n");
    assert.equal(statSync(join(dir, "file")).mode & 0o777, 0o644);
    assert.deepEqual(readdirSync(dir), ["file"]);
  });

  it("an idmapped bind mount (idmap: true) shows host owners, and its writes are stored as host ids", async () => {
    const dir = join(scratch, "idmapped");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "file"), "host\n");
    const mount: MountSpec = { source: bindMountable(dir), dest: "/m", idmap: true };
    const out = await output(
      { mounts: [mount] },
      { userns: "auto", args: ["sh", "-c", "stat -c %u:%g /m/file; echo new > /m/new; chown 5:5 /m/new"] },
    );
    assert.equal(out, "0:0\n");
    assert.deepEqual([statSync(join(dir, "new")).uid, statSync(join(dir, "new")).gid], [5, 5]);
  });

  it("explicit maps: never onto the host's accounts, never onto a live run's ids", async () => {
    const at = (hostId: number) => ({ uidMap: [{ containerId: 0, hostId, size: 65536 }], gidMap: [{ containerId: 0, hostId, size: 65536 }] });
    await assert.rejects(output({}, { userns: at(0), args: ["true"] }), InvalidArgumentError);
    await assert.rejects(output({}, { userns: at(1000), args: ["true"] }), InvalidArgumentError);
    const p = paused(env, {}, { userns: "auto" }, "cat /proc/self/uid_map");
    await p.ready;
    const live = mappedStart(p.stdout.text.split("\n")[0]!);
    await assert.rejects(output({}, { userns: at(live + 4096), args: ["true"] }), FailedPreconditionError);
    // While an explicit run holds its ids, "auto" hands out others; runs with the very same maps share them.
    const q = paused(env, {}, { userns: at(POOL.start + POOL.size - 65536) }, "true");
    const r = paused(env, {}, { userns: at(POOL.start + POOL.size - 65536) }, "true");
    await Promise.all([q.ready, r.ready]);
    assert.equal(rangesOf(env.namespace).length, 3);
    await Promise.all([p.finish(), q.finish(), r.finish()]);
  });

  for (const idmap of [true, false]) {
    it(`a read-only ${idmap ? "idmapped" : "plain"} bind is read-only on the host: not even a privileged container remounts it writable`, async () => {
      const dir = join(scratch, `ro-${idmap}`);
      mkdirSync(dir, { recursive: true });
      // World-writable: only the mount's read-only flag keeps the container out.
      writeFileSync(join(dir, "file"), "host\n");
      chmodSync(join(dir, "file"), 0o666);
      // A Mountable that hands out a writable bind whatever it is asked: the run's `readonly` must still hold.
      const careless: Mountable = { mount: async () => ({ mounts: [{ type: "bind", source: dir, options: ["rbind"] }], release: async () => {} }) };
      const out = await output(
        { mounts: [{ source: careless, dest: "/m", readonly: true, idmap }] },
        {
          userns: "auto",
          security: "insecure",
          args: ["sh", "-c", "mount -o remount,rw,bind /m 2>/dev/null; echo pwned >> /m/file 2>/dev/null; cat /m/file"],
        },
      );
      assert.equal(out, "host\n");
      assert.equal(readFileSync(join(dir, "file"), "utf8"), "host\n");
    });
  }

  it("two concurrent auto runs get disjoint ranges, and each range is free again after its run", async () => {
    const a = paused(env, {}, { userns: "auto" }, "cat /proc/self/uid_map");
    const b = paused(env, {}, { userns: "auto" }, "cat /proc/self/uid_map");
    await Promise.all([a.ready, b.ready]);
    const sa = mappedStart(a.stdout.text.split("\n")[0]!);
    const sb = mappedStart(b.stdout.text.split("\n")[0]!);
    assert.notEqual(sa, sb);
    assert.ok(Math.abs(sa - sb) >= 65536);
    assert.equal(rangesOf(env.namespace).length, 2);
    await Promise.all([a.finish(), b.finish()]);
  });

  it("tmpfs mounts, the cwd it creates, /etc/hosts and /etc/resolv.conf are owned as without a user namespace", async () => {
    const out = await output(
      { mounts: [{ source: tmpfsMountable(), dest: "/t" }] },
      {
        userns: "auto",
        user: "1000:1000",
        cwd: "/new/cwd",
        args: ["sh", "-c", "pwd; stat -c %u:%g /t /new/cwd /new /etc/hosts /etc/resolv.conf; cat /etc/hosts | grep -c localhost"],
      },
    );
    assert.equal(out, "/new/cwd\n0:0\n1000:1000\n1000:1000\n0:0\n0:0\n2\n");
  });

  it("a memory limit applies to a user-namespaced container", async () => {
    const out = await output(
      {},
      { userns: "auto", resources: { memory: 64 * 1024 * 1024 }, args: ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] },
    );
    assert.equal(out, `${64 * 1024 * 1024}\n`);
  });

  it("exec joins the run's user namespace: the same ids", async () => {
    const id = env.uniqueId("ux");
    const p = paused(env, { id }, { userns: "auto" }, "cat /proc/self/uid_map");
    await p.ready;
    const stdout = new Collect();
    await env.executor.exec(id, { meta: { args: ["sh", "-c", "id -u; cat /proc/self/uid_map"] } as ProcessMeta, stdout });
    const [uid, map] = stdout.text.split("\n");
    assert.equal(uid, "0");
    assert.equal(mappedStart(map!), mappedStart(p.stdout.text.split("\n")[0]!));
    const asUser = new Collect();
    await env.executor.exec(id, {
      meta: { args: ["sh", "-c", "id -u; touch /tmp/by-user; stat -c %u /tmp/by-user"], user: "user" } as ProcessMeta,
      stdout: asUser,
    });
    assert.equal(asUser.text, "1000\n1000\n");
    // A user outside the maps: a clear error before runc is asked.
    await assert.rejects(env.executor.exec(id, { meta: { args: ["true"], user: "70000" } as ProcessMeta }), InvalidArgumentError);
    await p.finish();
  });

  it("an image root runs in a user namespace, and a commit from it is stored with ordinary ids", async () => {
    const commit = `userns-commit-${process.pid}`;
    const resolved = await resolveImage(env.client, image);
    const out = await output(
      { root: { source: imageMountable(env.client, resolved) } },
      withImageDefaults({ userns: "auto", args: ["sh", "-c", "id -u; id -un; pwd; stat -c %u /work/dir; cat /second.txt"] }, resolved.imageConfig),
    );
    // The image's user, and the working directory made for it, as without a user namespace.
    assert.equal(out, "1000\nuser\n/work/dir\n1000\nsecond\n");
    await output(
      { root: { source: imageMountable(env.client, resolved, { commit }) } },
      { userns: "auto", args: ["sh", "-c", "echo a > /a && chown 1000:1000 /a && mkdir /d && rm /second.txt"] },
    );
    // Without a user namespace, the committed files have the owners the run gave them inside.
    const later = await output(
      { root: { source: snapshotMountable(env.client, commit) } },
      { args: ["sh", "-c", "stat -c %u:%g /a /d; ls /second.txt 2>&1 | grep -c 'No such'"] },
    );
    assert.equal(later, "1000:1000\n0:0\n1\n");
    // And a snapshot root in a user namespace sees the same owners.
    const inNs = await output(
      { root: { source: snapshotMountable(env.client, commit) } },
      { userns: "auto", args: ["stat", "-c", "%u:%g", "/a", "/d"] },
    );
    assert.equal(inNs, "1000:1000\n0:0\n");
    await env.client.snapshots.remove({ snapshotter: "overlayfs", key: commit });
  });

  it("a root on a filesystem that refuses idmapped mounts: FailedPreconditionError naming it, nothing left", async () => {
    // An overlay mount as the directory root: overlayfs takes no idmapping (EINVAL).
    const base = join(scratch, "ovl");
    for (const d of ["lower", "upper", "work", "merged"]) mkdirSync(join(base, d), { recursive: true });
    await run("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${env.rootfs},upperdir=${base}/upper,workdir=${base}/work`, `${base}/merged`]);
    try {
      await assert.rejects(output({ root: { source: bindMountable(`${base}/merged`) } }, { userns: "auto", args: ["true"] }), (err: unknown) => {
        assert.ok(err instanceof FailedPreconditionError, String(err));
        assert.match(err.message, /overlay/);
        assert.match(err.message, /idmapped/);
        return true;
      });
    } finally {
      await run("umount", [`${base}/merged`]);
    }
  });

  it("bad input fails before anything is created", async () => {
    await assert.rejects(
      output(
        {},
        {
          userns: { uidMap: [{ containerId: 1, hostId: 100000, size: 10 }], gidMap: [{ containerId: 0, hostId: 100000, size: 10 }] },
          args: ["true"],
        },
      ),
      InvalidArgumentError,
    );
    await assert.rejects(output({ mounts: [{ source: bindMountable(scratch), dest: "/m", idmap: true }] }, { args: ["true"] }), InvalidArgumentError);
    await assert.rejects(output({}, { userns: "auto", user: "70000", args: ["true"] }), InvalidArgumentError);
  });

  it("a hostile container changes nothing on the host", async () => {
    const dir = join(scratch, "hostile");
    mkdirSync(join(dir, "sub"), { recursive: true });
    writeFileSync(join(dir, "sub", "file"), "host\n", { mode: 0o644 });
    const hostnameBefore = readFileSync("/proc/sys/kernel/hostname", "utf8");
    const script = [
      "echo pwned > /proc/self/root/m/sub/file",
      "echo pwned > /proc/1/root/m/sub/file",
      "ln -s /m/sub/file /tmp/link && echo pwned > /tmp/link",
      "mount -o remount,rw /m",
      "umount /m && echo pwned > /m/sub/file",
      "echo host > /proc/sys/kernel/hostname",
      "echo 1 > /proc/sys/vm/drop_caches",
      "echo 1 > /sys/kernel/mm/ksm/run",
      "echo c > /proc/sysrq-trigger",
      "cp /bin/busybox /suid && chmod 4755 /suid",
      "mount -t tmpfs none /mnt && mknod /mnt/null c 1 3",
      "true",
    ].join("; ");
    const p = paused(env, { mounts: [{ source: bindMountable(dir), dest: "/m", readonly: true }] }, { userns: "auto" }, `(${script}) 2>/dev/null`);
    await p.ready;
    const [range] = rangesOf(env.namespace);
    const runs = join(env.stateDir, "runs", env.namespace);
    const [runDir] = readdirSync(runs);
    const suid = lstatSync(join(runs, runDir!, "userns-root", "upper", "suid"));
    // The setuid binary it made is its own root's, a host id of its range: nobody on the host gains from it.
    assert.equal(suid.uid, range!.uid[0]);
    await p.finish();
    assert.equal(readFileSync(join(dir, "sub", "file"), "utf8"), "host\n");
    assert.equal(readFileSync("/proc/sys/kernel/hostname", "utf8"), hostnameBefore);
  });

  it("the CLI: run --userns auto and --uidmap", async () => {
    const common = ["--root", env.stateDir, "--namespace", env.namespace];
    const opts = { env: { ...process.env, CTREXEC_FIFO_ROOT: env.fifoRoot } };
    const a = await run(
      process.execPath,
      [CLI, ...common, "run", "--rm", "--network", "host", "--userns", "auto", "--", "cat", "/proc/self/uid_map"],
      opts,
    );
    assert.ok(mappedStart(a.stdout) >= 0x10000000);
    const b = await run(
      process.execPath,
      [
        CLI,
        ...common,
        "run",
        "--rm",
        "--network",
        "host",
        "--uidmap",
        "0:400000:65536",
        "--gidmap",
        "0:400000:65536",
        "--",
        "cat",
        "/proc/self/uid_map",
      ],
      opts,
    );
    assert.equal(mappedStart(b.stdout), 400000);
  });
});

describe("userns with a network namespace of its own or the host's", () => {
  for (const network of ["none", "bridge"] as const) {
    it(`network ${network}: the run works, with loopback in its sysfs`, async () => {
      // Its own executor: the bridge keeps a pool of namespaces until close.
      const env = await createExecutorEnv(`userns-${network}`, { userns: { pool: POOL } });
      try {
        const stdout = new Collect();
        await env.executor.run({
          process: { meta: { userns: "auto", network, args: ["sh", "-c", "id -u; ls /sys/class/net | grep -c lo"] }, stdout },
        });
        assert.equal(stdout.text, "0\n1\n");
        await env.executor.close();
        await env.assertNoLeaks();
        assert.deepEqual(rangesOf(env.namespace), []);
      } finally {
        await env.dispose();
      }
    });
  }
});

describe("userns range of a run whose task could not be deleted", () => {
  it("is released once the background retry deleted the task, with the run dir", async () => {
    // containerd through a proxy the test cuts: the run's cancel and cleanup find containerd away.
    const dir = await mkdtemp(join(tmpdir(), "ctrexec-test-userns-proxy-"));
    const sock = join(dir, "containerd.sock");
    let up = true;
    const conns = new Set<Socket>();
    const proxy = createServer((c) => {
      if (!up) {
        c.destroy();
        return;
      }
      const u = connect("/run/containerd/containerd.sock");
      conns.add(c).add(u);
      c.pipe(u).pipe(c);
      const end = () => {
        c.destroy();
        u.destroy();
      };
      c.on("error", end).on("close", end);
      u.on("error", end).on("close", end);
    }).listen(sock);
    const env = await createExecutorEnv("userns-orphan", { address: sock, userns: { pool: POOL } });
    try {
      const ac = new AbortController();
      const p = paused(env, { signal: ac.signal }, { userns: "auto" }, "true");
      await p.ready;
      up = false;
      for (const c of conns) c.destroy();
      ac.abort();
      await assert.rejects(p.finish());
      assert.equal(rangesOf(env.namespace).length, 1, "held while the task may live");
      up = true;
      await env.executor.close();
      assert.deepEqual(rangesOf(env.namespace), []);
      assert.deepEqual(await readdir(join(env.stateDir, "runs", env.namespace)).catch(() => []), []);
      await env.assertNoLeaks();
    } finally {
      await env.dispose();
      proxy.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("userns ranges after a crash", () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("userns-crash");
  });
  after(() => env.dispose());

  it("a SIGKILLed executor's range is held until prune, then free", async () => {
    const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
    const script = `
      const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
      const ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)}, fifoRoot: ${JSON.stringify(env.fifoRoot)}, defaultNetwork: "host" });
      await ex.run({ process: { meta: { args: ["sh", "-c", "echo ready; sleep 60"], userns: "auto" }, stdout: process.stdout } });`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("ready")) resolve();
      });
      child.on("exit", (code) => reject(new Error(`the child exited (${code}) before its run started`)));
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    assert.equal(rangesOf(env.namespace).length, 1, "the dead executor's range stays while its container may live");
    await prune({ client: env.client, stateDir: env.stateDir, fifoRoot: env.fifoRoot });
    assert.deepEqual(rangesOf(env.namespace), []);
    await env.assertClean();
  });
});
