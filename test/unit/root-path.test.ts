import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { isInside, resolveInRoot, resolveInRootDetailed } from "../../src/fs/root-path.js";

describe("resolveInRoot", () => {
  let root: string;
  before(async () => {
    root = await realpath(await mkdtemp(join(tmpdir(), "ctrexec-rootpath-")));
    await mkdir(join(root, "etc"), { recursive: true });
    await mkdir(join(root, "a/b"), { recursive: true });
    await writeFile(join(root, "etc/passwd"), "x");
    await symlink("/etc", join(root, "abs-etc"));
    await symlink("../../../../../../etc", join(root, "a/up"));
    await symlink("b", join(root, "a/rel"));
    await symlink("loop2", join(root, "loop1"));
    await symlink("loop1", join(root, "loop2"));
    await symlink("/", join(root, "to-root"));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("resolves plain paths", async () => {
    assert.equal(resolveInRoot(root, "/etc/passwd"), join(root, "etc/passwd"));
    assert.equal(resolveInRoot(root, "etc/passwd"), join(root, "etc/passwd"));
    assert.equal(resolveInRoot(root, "/"), root);
    assert.equal(resolveInRoot(root, ""), root);
  });

  it("clamps .. at the root", async () => {
    assert.equal(resolveInRoot(root, "/../../../etc/passwd"), join(root, "etc/passwd"));
    assert.equal(resolveInRoot(root, "/a/../../.."), root);
  });

  it("restarts absolute link targets at the root", async () => {
    assert.equal(resolveInRoot(root, "/abs-etc/passwd"), join(root, "etc/passwd"));
    assert.equal(resolveInRoot(root, "/to-root/etc"), join(root, "etc"));
  });

  it("keeps ..-laden relative link targets inside", async () => {
    assert.equal(resolveInRoot(root, "/a/up/passwd"), join(root, "etc/passwd"));
    assert.equal(resolveInRoot(root, "/a/rel"), join(root, "a/b"));
  });

  it("says whether the resolved path exists", async () => {
    const d = (p: string) => resolveInRootDetailed(root, p);
    assert.deepEqual(await d("/etc/passwd"), { path: join(root, "etc/passwd"), exists: true });
    assert.deepEqual(await d("/"), { path: root, exists: true });
    assert.deepEqual(await d("/abs-etc/passwd"), { path: join(root, "etc/passwd"), exists: true });
    assert.deepEqual(await d("/a/b/new/dir"), { path: join(root, "a/b/new/dir"), exists: false });
    assert.deepEqual(await d("/etc/passwd/below"), { path: join(root, "etc/passwd/below"), exists: false });
    // Back out of a missing component to one that exists, and into a link again.
    assert.deepEqual(await d("/nope/../a/rel"), { path: join(root, "a/b"), exists: true });
    assert.deepEqual(await d("/nope/x/../../etc"), { path: join(root, "etc"), exists: true });
  });

  it("keeps missing components as they are", async () => {
    assert.equal(resolveInRoot(root, "/a/b/new/dir"), join(root, "a/b/new/dir"));
    assert.equal(resolveInRoot(root, "/etc/passwd/below"), join(root, "etc/passwd/below"));
  });

  it("fails on symlink loops", async () => {
    assert.throws(() => resolveInRoot(root, "/loop1/x"), /too many levels of symbolic links/);
  });

  it("never resolves outside the root, for random trees of symlinks (property)", async () => {
    const targets = ["/", "..", "../..", "../../..", "/etc", "a", "../a/b", "/x/../../..", ".", "l0", "l1/l2", "/l3/.."];
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 25; round++) {
      const r = await realpath(await mkdtemp(join(tmpdir(), "ctrexec-prop-")));
      try {
        const dirs = ["", "a", "a/b", "x", "x/y"];
        for (const d of dirs) await mkdir(join(r, d), { recursive: true });
        for (let i = 0; i < 8; i++) {
          const dir = dirs[rand(dirs.length)]!;
          await symlink(targets[rand(targets.length)]!, join(r, dir, `l${i}`)).catch(() => {});
        }
        const names = ["a", "b", "x", "y", "..", ".", "l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7", "etc"];
        for (let q = 0; q < 40; q++) {
          const depth = 1 + rand(6);
          const p = `/${Array.from({ length: depth }, () => names[rand(names.length)]).join("/")}`;
          let resolved: string;
          try {
            resolved = resolveInRoot(r, p);
          } catch (err) {
            assert.match((err as Error).message, /too many levels/);
            continue;
          }
          assert.ok(isInside(r, resolved), `${p} resolved to ${resolved}, outside ${r}`);
          const real = await realpath(resolved).catch(() => undefined);
          if (real !== undefined) assert.equal(real, resolved, `${p}: existing result has a symlink in it`);
        }
      } finally {
        await rm(r, { recursive: true, force: true });
      }
    }
  });

  // A racer swaps the directory `a` and a symlink to a host directory that holds `secret` (RENAME_EXCHANGE):
  // a lookup of root/a/secret by path, made while `a` is the link, is followed by the kernel to the host file
  // (an existence oracle on host paths; an automount or a dead network mount there would be triggered or hang).
  // Looked up fd-relative, the host directory is never reached: `a/secret` never exists.
  it("never looks a host path up while a component is swapped for an absolute symlink (racer)", async () => {
    const base = await realpath(await mkdtemp(join(tmpdir(), "ctrexec-rootpath-race-")));
    try {
      const racer = join(base, "racer");
      execFileSync("cc", ["-O2", "-Wall", "-o", racer, fileURLToPath(new URL("../../../test/helpers/racer.c", import.meta.url))]);
      const r = join(base, "root");
      const host = join(base, "host");
      await mkdir(join(r, "a"), { recursive: true });
      await mkdir(host);
      await writeFile(join(host, "secret"), "host");
      await symlink(host, join(r, "l"));
      const stop = join(base, "stop");
      const child = spawn(racer, ["pair", join(r, "a"), join(r, "l"), stop, "1000000000"], { stdio: ["ignore", "pipe", "inherit"] });
      const exited = new Promise<void>((done) => child.on("close", () => done()));
      await new Promise<void>((done) => child.stdout.on("data", (d: Buffer) => d.toString().includes("racing") && done()));
      let leaked = 0;
      try {
        for (let i = 0; i < 20000; i++) {
          const got = resolveInRootDetailed(r, "/a/secret");
          assert.ok(isInside(r, got.path), got.path);
          if (got.exists) leaked++;
        }
      } finally {
        await writeFile(stop, "");
        await exited;
      }
      assert.equal(leaked, 0, `${leaked} lookups saw the host's file through the swapped link`);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
