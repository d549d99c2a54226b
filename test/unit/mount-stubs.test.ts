import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, realpath, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { MountStubsCleaner } from "../../src/executor/mount-stubs.js";

/** Plays the runtime: creates each mount point as runc does (dirs, or an empty file for /etc/*). */
async function createStubs(root: string, dirs: string[], files: string[] = []) {
  for (const d of dirs) await mkdir(join(root, d), { recursive: true });
  for (const f of files) {
    await mkdir(join(root, f, ".."), { recursive: true });
    await writeFile(join(root, f), "");
  }
}

async function tree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const e of (await readdir(join(dir, prefix), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = prefix ? `${prefix}/${e.name}` : e.name;
    out.push(e.isDirectory() ? `${p}/` : p);
    if (e.isDirectory()) out.push(...(await tree(dir, p)));
  }
  return out;
}

describe("MountStubsCleaner (reference §7)", () => {
  let root: string;
  beforeEach(async () => {
    root = await realpath(await mkdtemp(join(tmpdir(), "ctrexec-stubs-")));
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it("removes created stubs and, recursively, their created parents; keeps what existed and what has content", async () => {
    await mkdir(join(root, "test/qux"), { recursive: true });
    const mounts = ["/test/foo", "/test/bar/x/y", "/test/baz/x", "/test/qux"];
    const cleaner = await MountStubsCleaner.prepare(root, mounts, { recursive: true });
    assert.deepEqual(cleaner.recorded.slice(0, 2), ["/etc/resolv.conf", "/etc"]);
    await createStubs(
      root,
      mounts.map((m) => m.slice(1)),
      ["etc/resolv.conf", "etc/hosts"],
    );
    await writeFile(join(root, "test/baz/keep"), "kept"); // what the command wrote
    await cleaner.clean();
    assert.deepEqual(await tree(join(root, "test")), ["baz/", "baz/keep", "qux/"]);
    assert.deepEqual(await readdir(root), ["test"]);
  });

  it("without recursion removes only the leaf stubs", async () => {
    const cleaner = await MountStubsCleaner.prepare(root, ["/test/bar/x"]);
    await createStubs(root, ["test/bar/x"]);
    await cleaner.clean();
    assert.deepEqual(await tree(join(root, "test")), ["bar/"]);
  });

  it("keeps a stub file the command wrote to", async () => {
    await mkdir(join(root, "etc"));
    const cleaner = await MountStubsCleaner.prepare(root, []);
    await writeFile(join(root, "etc/resolv.conf"), "nameserver 1.1.1.1\n");
    await writeFile(join(root, "etc/hosts"), "");
    await cleaner.clean();
    assert.deepEqual(await readdir(join(root, "etc")), ["resolv.conf"]);
  });

  it("restores the parents' times", async () => {
    for (const d of ["var", "tmp", "etc"]) await mkdir(join(root, d));
    const cleaner = await MountStubsCleaner.prepare(root, ["/var/foo", "/tmp/foo2/bar"], { recursive: true });
    await createStubs(root, ["var/foo", "tmp/foo2/bar"], ["etc/resolv.conf", "etc/hosts"]);
    for (const d of ["var", "tmp", "etc"]) await utimes(join(root, d), 1234567890, 1234567890);
    await cleaner.clean();
    for (const d of ["var", "tmp", "etc"]) {
      assert.equal((await stat(join(root, d))).mtimeMs, 1234567890 * 1000, d);
      assert.deepEqual(await readdir(join(root, d)), [], d);
    }
  });

  it("records the stub where it is made behind a symlinked destination, and removes it (item 4)", async () => {
    // ln -s ../run $R/var/run; ctrexec run --rootfs $R --tmpfs /var/run/x true left $R/run/x.
    await mkdir(join(root, "run"));
    await mkdir(join(root, "var"));
    await symlink("../run", join(root, "var/run"));
    await mkdir(join(root, "etc"));
    await writeFile(join(root, "etc/resolv.conf"), "");
    await writeFile(join(root, "etc/hosts"), "");
    const cleaner = await MountStubsCleaner.prepare(root, ["/var/run/x", "/var/run/y/z"], { recursive: true });
    assert.deepEqual(cleaner.recorded, ["/run/x", "/run/y/z", "/run/y"]);
    await createStubs(root, ["run/x", "run/y/z"]); // where runc makes them (it resolves inside the root too)
    await cleaner.clean();
    assert.deepEqual(await readdir(join(root, "run")), []);
    assert.deepEqual(await tree(join(root, "var")), ["run"]);
  });

  it("leaves a stub alone when a component of its recorded path became a symlink, even one inside the root", async () => {
    const cleaner = await MountStubsCleaner.prepare(root, ["/a/x"], { recursive: false });
    await createStubs(root, ["a/x", "b/x"]);
    await rm(join(root, "a"), { recursive: true });
    await symlink("b", join(root, "a"));
    await cleaner.clean();
    assert.deepEqual(await tree(join(root, "b")), ["x/"]);
  });

  it("never deletes outside the rootfs when a stub's parent became a symlink during the run", async () => {
    const outside = await mkdtemp(join(tmpdir(), "ctrexec-outside-"));
    try {
      await mkdir(join(outside, "x"));
      const cleaner = await MountStubsCleaner.prepare(root, ["/a/x"], { recursive: true });
      await createStubs(root, ["a/x"]);
      await rm(join(root, "a"), { recursive: true });
      await symlink(outside, join(root, "a")); // hostile: /a -> host dir with an empty x
      await cleaner.clean();
      assert.deepEqual(await readdir(outside), ["x"], "the cleaner deleted outside the rootfs");
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });
});
