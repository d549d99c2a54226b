import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { AlreadyExistsError, ExitError, FailedPreconditionError, NotFoundError } from "../../src/errors.js";
import { mountLocally } from "../../src/executor/local-mount.js";
import { tmpfsMountable } from "../../src/executor/mountables.js";
import type { ProcessMeta } from "../../src/executor/types.js";
import { withImageDefaults } from "../../src/image/image.js";
import { imageMountable, snapshotMountable } from "../../src/image/mountables.js";
import { resolveImage } from "../../src/image/resolve.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";
import { treeEntries, writeOciArchive } from "../helpers/oci-image.js";
import { Collect } from "../helpers/streams.js";

const run = promisify(execFile);

/** The ctrexec CLI (the bundled binary) on the test's namespace and state dir: exit code and output. */
function cliOf(env: ExecutorEnv): (...argv: string[]) => Promise<{ code: number; stdout: string; stderr: string }> {
  const bin = new URL("../../src/cli/ctrexec.mjs", import.meta.url).pathname;
  return (...argv) =>
    new Promise((resolve) =>
      execFile(
        process.execPath,
        [bin, "--namespace", env.namespace, "--root", env.stateDir, ...argv],
        { env: { ...process.env, CTREXEC_FIFO_ROOT: env.fifoRoot } },
        (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
}

/** After each test: nothing of a run left, no active snapshot, no lease of ours. */
async function assertNothingLeft(env: ExecutorEnv): Promise<void> {
  await env.assertClean();
  assert.deepEqual(
    (await env.client.snapshots.list("overlayfs")).filter((s) => s.kind !== "COMMITTED").map((s) => s.name),
    [],
    "active snapshots left",
  );
  assert.deepEqual(
    (await env.client.leases.list()).map((l) => l.id).filter((id) => id.startsWith("ctrexec-")),
    [],
    "leases left",
  );
}

/**
 * Removes the image and whatever snapshots are left (commits of failed tests too), leaves first, then asserts that
 * nothing is left in the namespace (dispose asserts that it was deleted).
 */
async function disposeImageEnv(env: ExecutorEnv, image: string): Promise<void> {
  const notFound = (e: unknown) => {
    if (!(e instanceof NotFoundError)) throw e;
  };
  let failure: unknown;
  try {
    await env.client.images.delete(image, { sync: true }).catch(notFound);
    // Leaves first: containerd refuses to remove a snapshot with children. A round that removes none ends it.
    for (let removed = true; removed; ) {
      removed = false;
      const snaps = await env.client.snapshots.list("overlayfs");
      const parents = new Set(snaps.map((x) => x.parent));
      for (const x of snaps.filter((x) => !parents.has(x.name))) {
        await env.client.snapshots.remove({ snapshotter: "overlayfs", key: x.name }).then(
          () => {
            removed = true;
          },
          (e: unknown) => {
            if (e instanceof NotFoundError) removed = true;
            else failure ??= e;
          },
        );
      }
    }
  } catch (e) {
    failure = e;
  }
  try {
    await env.assertNamespaceEmpty();
  } finally {
    await env.dispose();
  }
  if (failure) throw failure;
}

describe("roots from images and snapshots (overlayfs)", () => {
  let env: ExecutorEnv;
  let image: string;
  const committed: string[] = [];

  before(async () => {
    env = await createExecutorEnv("img");
    image = `docker.io/ctrexec/test:${process.pid}`;
    const base = await treeEntries(env.rootfs, (rel) => rel === "etc/hosts" || rel === "etc/resolv.conf");
    const archive = join(env.stateDir, "image.tar");
    await writeOciArchive(
      archive,
      image,
      [
        [...base, { type: "file", path: "base.txt", content: "base\n" }, { type: "file", path: "removed.txt", content: "gone\n" }],
        [
          { type: "file", path: "added.txt", content: "added\n" },
          { type: "file", path: ".wh.removed.txt", content: "" },
        ],
      ],
      {
        Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=yes"],
        WorkingDir: "/work",
        User: "user",
        Cmd: ["sh", "-c", "echo default cmd; id -un; pwd; echo $FROM_IMAGE"],
      },
    );
    await run("ctr", ["-n", env.namespace, "images", "import", "--no-unpack", archive]);
  });

  async function snapshots(): Promise<{ name: string; kind: string }[]> {
    return (await env.client.snapshots.list("overlayfs")).map((s) => ({ name: s.name, kind: s.kind }));
  }

  afterEach(() => assertNothingLeft(env));
  after(() => disposeImageEnv(env, image));

  async function runOn(
    source: ReturnType<typeof imageMountable>,
    meta: Partial<ProcessMeta>,
    extra: { mounts?: { source: ReturnType<typeof tmpfsMountable>; dest: string }[] } = {},
  ) {
    const stdout = new Collect();
    const stderr = new Collect();
    await env.executor.run({
      root: { source },
      ...(extra.mounts ? { mounts: extra.mounts } : {}),
      process: { meta: meta as ProcessMeta, stdout, stderr },
    });
    return stdout.text;
  }

  it("runs on an image: both layers' files, not the whited-out one, and the image config's defaults", async () => {
    const resolved = await resolveImage(env.client, image);
    assert.equal(resolved.layers.length, 2);
    const meta = withImageDefaults({}, resolved.imageConfig);
    assert.equal(await runOn(imageMountable(env.client, resolved), meta), "default cmd\nuser\n/work\nyes\n");
    const files = await runOn(imageMountable(env.client, image), { args: ["sh", "-c", "cat /base.txt /added.txt; ls /removed.txt 2>&1 || true"] });
    assert.match(files, /^base\nadded\nls: \/removed.txt: No such file or directory\n$/);
  });

  it("chains three steps through committed snapshots; the image and the commits carry no mount stubs", async () => {
    const s1 = `ctrexec-test-s1-${process.pid}`;
    const s2 = `ctrexec-test-s2-${process.pid}`;
    committed.push(s1, s2);
    await runOn(
      imageMountable(env.client, image, { commit: s1 }),
      { args: ["sh", "-c", "echo a > /a"] },
      {
        mounts: [{ source: tmpfsMountable(), dest: "/stub/dir" }],
      },
    );
    await runOn(snapshotMountable(env.client, s1, { commit: s2 }), { args: ["sh", "-c", "echo b > /b"] });
    assert.equal(await runOn(snapshotMountable(env.client, s2), { args: ["cat", "/a", "/b"] }), "a\nb\n");
    assert.equal(await runOn(imageMountable(env.client, image), { args: ["sh", "-c", "ls /a /b 2>/dev/null | wc -l"] }), "0\n");

    // Look at s2 itself, from the host (under a lease: an unreferenced view is fair game for containerd's GC).
    const key = `ctrexec-test-view-${process.pid}`;
    const lease = `ctrexec-test-lease-${process.pid}`;
    await env.client.leases.create(lease);
    const mounts = await env.client.withLease(lease).snapshots.view({ snapshotter: "overlayfs", key, parent: s2 });
    const local = await mountLocally(mounts, env.stateDir);
    try {
      for (const p of ["a", "b", "base.txt"]) assert.ok(existsSync(join(local.path, p)), `${p} missing from s2`);
      for (const p of ["etc/resolv.conf", "etc/hosts", "stub", "work"]) assert.equal(existsSync(join(local.path, p)), false, `${p} leaked into s2`);
    } finally {
      await local.unmount();
      await env.client.snapshots.remove({ snapshotter: "overlayfs", key });
      await env.client.leases.delete(lease);
    }
  });

  it("30 runs on one image, 4 at a time, each on its own snapshot, leave nothing", async () => {
    let next = 0;
    const outs: string[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < 30) {
          const i = next++;
          outs[i] = await runOn(imageMountable(env.client, image), { args: ["sh", "-c", `echo ${i} > /mine; cat /mine; ls / | grep -c '^mine$'`] });
        }
      }),
    );
    assert.deepEqual(
      outs,
      Array.from({ length: 30 }, (_, i) => `${i}\n1\n`),
    );
  });

  it("works from the CLI: run --image (the image's cmd), --commit, --snapshot, images, snapshots ls|rm", async () => {
    const cli = cliOf(env);
    const snap = `ctrexec-test-cli-${process.pid}`;
    committed.push(snap);
    const def = await cli("run", "--network", "none", "--image", image);
    assert.equal(def.stdout, "default cmd\nuser\n/work\nyes\n", def.stderr);
    assert.equal((await cli("run", "--network", "none", "--image", image, "--commit", snap, "-u", "root", "sh", "-c", "echo c > /c")).code, 0);
    assert.equal((await cli("run", "--network", "none", "--snapshot", snap, "cat", "/c")).stdout, "c\n");
    const images = JSON.parse((await cli("images", "--format", "json")).stdout) as { name: string }[];
    assert.ok(images.some((i) => i.name === image));
    assert.match((await cli("snapshots", "ls")).stdout, new RegExp(`^${snap}\\s+committed`, "m"));
    assert.equal((await cli("snapshots", "rm", snap)).stdout, `${snap}\n`);
    // --pull never: the default (missing) would reach out to Docker Hub, and tests talk only to loopback.
    const missing = await cli("run", "--pull", "never", "--image", "docker.io/no/such:image", "true");
    assert.equal(missing.code, 125);
    assert.match(missing.stderr, /--pull never forbids pulling it/);
    assert.equal((await cli("run", "--rootfs", "/", "--image", image, "true")).code, 125);
    assert.equal((await cli("run", "--commit", "x", "true")).code, 125);
  });

  it("runs the chained-build example: three steps on the image, the artifact copied out", async () => {
    const out = join(env.stateDir, "site-out");
    const example = new URL("../../examples/chained-build.js", import.meta.url).pathname;
    const { stdout } = await run(process.execPath, [example, image, out], {
      env: { ...process.env, CONTAINERD_NAMESPACE: env.namespace, CTREXEC_ROOT: env.stateDir, CTREXEC_FIFO_ROOT: env.fifoRoot },
    });
    assert.equal(stdout, `${out}/site.tar.gz\n`);
    const { stdout: list } = await run("tar", ["-xzOf", join(out, "site.tar.gz"), "index.html"]);
    assert.equal(list, "<h1>Home</h1>\n<p>Welcome to the <em>ctrexec</em> demo site.</p>\n");
    const sum = (await run("sha256sum", ["site.tar.gz"], { cwd: out })).stdout;
    assert.equal(await readFile(join(out, "site.tar.gz.sha256"), "utf8"), sum);
    assert.deepEqual(
      (await snapshots()).filter((s) => s.name.startsWith("build-")),
      [],
      "the example left its snapshots",
    );
  });

  it("prune drops the lease and active snapshot of a process that died mid-run; its parent can be removed", async () => {
    const base = `ctrexec-test-base-${process.pid}`;
    await runOn(imageMountable(env.client, image, { commit: base }), { args: ["true"] });
    const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
    const script = `
      const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
      const { snapshotMountable } = await import(${mod("../../src/image/mountables.js")});
      const span = { addEvent: (n) => { if (n === "Container started") process.kill(process.pid, "SIGKILL"); return span; }, end: () => {} };
      const ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)},
        fifoRoot: ${JSON.stringify(env.fifoRoot)}, defaultNetwork: "host", tracer: { startSpan: () => span } });
      await ex.run({ root: { source: snapshotMountable(ex.client, ${JSON.stringify(base)}) }, process: { meta: { args: ["sleep", "30"] } } });`;
    await run(process.execPath, ["--input-type=module", "-e", script]).catch(() => {});
    assert.ok(
      (await snapshots()).some((s) => s.kind === "ACTIVE"),
      "the dead run left no active snapshot",
    );
    const { ContainerdExecutor } = await import("../../src/executor/executor.js");
    // A fresh executor that prunes at start, as a service would after a crash.
    await using ex = await ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot, pruneOnStart: true });
    void ex;
    assert.deepEqual(
      (await snapshots()).filter((s) => s.kind !== "COMMITTED"),
      [],
      "prune left the dead run's snapshot",
    );
    // Had containerd's GC taken the dead run's snapshot, its parent would still list it as a child (GC does not
    // unlink it), and containerd would refuse to remove the parent, a GC root, for good.
    await env.client.snapshots.remove({ snapshotter: "overlayfs", key: base });
  });

  it("errors: an unknown image, a missing parent, a snapshot name taken; nothing left", async () => {
    await assert.rejects(runOn(imageMountable(env.client, "docker.io/no/such:image"), { args: ["true"] }), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.match(e.message, /image docker.io\/no\/such:image not found .*images import/);
      return true;
    });
    await assert.rejects(runOn(snapshotMountable(env.client, "no-such-parent"), { args: ["true"] }), NotFoundError);
    const foreign = `docker.io/ctrexec/foreign:${process.pid}`;
    const archive = join(env.stateDir, "foreign.tar");
    await writeOciArchive(archive, foreign, [[{ type: "file", path: "x", content: "x" }]], {}, "s390x");
    await run("ctr", ["-n", env.namespace, "images", "import", "--no-unpack", "--all-platforms", archive]);
    try {
      await assert.rejects(
        runOn(imageMountable(env.client, foreign), { args: ["true"] }),
        (e: unknown) => e instanceof FailedPreconditionError && /is for linux\/s390x/.test(e.message),
      );
    } finally {
      await run("ctr", ["-n", env.namespace, "images", "rm", "--sync", foreign]).catch(() => {});
    }
    const taken = `ctrexec-test-taken-${process.pid}`;
    committed.push(taken);
    await runOn(imageMountable(env.client, image, { commit: taken }), { args: ["true"] });
    await assert.rejects(runOn(imageMountable(env.client, image, { commit: taken }), { args: ["true"] }), AlreadyExistsError);
  });
});

/** Issue 17, item 10: a step's changes are committed only when it succeeded, unless asked for. */
describe("commits keep only successful steps (overlayfs)", () => {
  let env: ExecutorEnv;
  let image: string;

  before(async () => {
    env = await createExecutorEnv("sem-img");
    image = `docker.io/ctrexec/sem-commit:${process.pid}`;
    const base = await treeEntries(env.rootfs, (rel) => rel === "etc/hosts" || rel === "etc/resolv.conf");
    const archive = join(env.stateDir, "image.tar");
    await writeOciArchive(archive, image, [base], { Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] });
    await run("ctr", ["-n", env.namespace, "images", "import", "--no-unpack", archive]);
  });

  const snapshotNames = async () => (await env.client.snapshots.list("overlayfs")).filter((s) => s.kind === "COMMITTED").map((s) => s.name);

  afterEach(() => assertNothingLeft(env));
  after(() => disposeImageEnv(env, image));

  const step = (source: ReturnType<typeof imageMountable>, script: string, validExitCodes?: number[]) =>
    env.executor.run({ root: { source }, process: { meta: { args: ["sh", "-c", script], ...(validExitCodes ? { validExitCodes } : {}) } } });

  it("commits nothing for a failed step; commits a step that succeeded, or a failed one when asked to", async () => {
    const failed = `sem-failed-${process.pid}`;
    await assert.rejects(step(imageMountable(env.client, image, { commit: failed }), "touch /half; exit 1"), ExitError);
    assert.ok(!(await snapshotNames()).includes(failed), "a failed step's changes were committed");

    // A code the caller counts as success is a successful step.
    const valid = `sem-valid-${process.pid}`;
    assert.equal((await step(imageMountable(env.client, image, { commit: valid }), "touch /done; exit 3", [3])).exitCode, 3);
    const debug = `sem-debug-${process.pid}`;
    await assert.rejects(step(imageMountable(env.client, image, { commit: debug, commitOnFailure: true }), "touch /half; exit 1"), ExitError);
    assert.deepEqual((await snapshotNames()).filter((n) => n.startsWith("sem-")).sort(), [debug, valid].sort());
    const ls = await step(snapshotMountable(env.client, debug), "test -e /half");
    assert.equal(ls.exitCode, 0, "the failed step's changes are in its debug commit");
  });

  it("from the CLI: run --commit of a failing command leaves no snapshot; --commit-on-failure keeps it", async () => {
    const cli = cliOf(env);
    const s1 = `sem-cli-s1-${process.pid}`;
    const r = await cli("run", "--network", "none", "--image", image, "--commit", s1, "--", "sh", "-c", "touch /half; exit 1");
    assert.equal(r.code, 1, r.stderr);
    assert.ok(!(await snapshotNames()).includes(s1), "the failed step left its snapshot");
    const s2 = `sem-cli-s2-${process.pid}`;
    assert.equal(
      (await cli("run", "--network", "none", "--image", image, "--commit", s2, "--commit-on-failure", "--", "sh", "-c", "exit 1")).code,
      1,
    );
    assert.ok((await snapshotNames()).includes(s2));
    assert.equal((await cli("run", "--image", image, "--commit-on-failure", "true")).code, 125, "--commit-on-failure without --commit");
  });
});
