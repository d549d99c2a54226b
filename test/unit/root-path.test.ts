import assert from "node:assert/strict";
import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
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
          const p = "/" + Array.from({ length: depth }, () => names[rand(names.length)]).join("/");
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
});
