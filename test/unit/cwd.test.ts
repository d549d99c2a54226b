import assert from "node:assert/strict";
import { chownSync, mkdirSync, renameSync, rmdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, realpath, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { UnknownError } from "../../src/errors.js";
import { ensureCwd } from "../../src/fs/cwd.js";

describe("ensureCwd", () => {
  let root: string;
  before(async () => {
    root = await realpath(await mkdtemp(join(tmpdir(), "ctrexec-cwd-")));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("creates missing components 0755 owned by the user, ignoring the umask", async () => {
    const old = process.umask(0o077);
    try {
      assert.equal(await ensureCwd(root, "/new/a/b", 1, 1), join(root, "new/a/b"));
    } finally {
      process.umask(old);
    }
    for (const p of ["new", "new/a", "new/a/b"]) {
      const st = await stat(join(root, p));
      assert.equal(st.mode & 0o7777, 0o755, p);
      assert.deepEqual([st.uid, st.gid], [1, 1], p);
    }
  });

  it("leaves existing directories alone", async () => {
    await mkdir(join(root, "private"), { mode: 0o700 });
    await ensureCwd(root, "/private/sub", 1000, 1000);
    const st = await stat(join(root, "private"));
    assert.equal(st.mode & 0o777, 0o700);
    assert.equal(st.uid, 0);
    assert.equal((await stat(join(root, "private/sub"))).uid, 1000);
  });

  it("resolves a symlinked cwd inside the rootfs, never on the host", async () => {
    await symlink("../../../tmp/ctrexec-cwd-escape", join(root, "escape"));
    assert.equal(await ensureCwd(root, "/escape/x", 0, 0), join(root, "tmp/ctrexec-cwd-escape/x"));
    assert.deepEqual(await readdir(join(root, "tmp")), ["ctrexec-cwd-escape"]);
    await assert.rejects(stat("/tmp/ctrexec-cwd-escape"), { code: "ENOENT" });
  });

  // Item 2 of the race a container on a shared root can win: a just-made component swapped for a symlink
  // before it is chmod'ed and chown'ed. The hook plants the symlink exactly then.
  for (const [kind, link] of [
    ["absolute", (outside: string) => outside],
    ["relative, climbing with ..", (outside: string, at: string) => relative(join(at, ".."), outside)],
  ] as const) {
    for (const cwd of ["/race/a", "/race/a/b"]) {
      it(`never chmods, chowns or creates through a component swapped for a symlink (${kind}, ${cwd})`, async () => {
        const outside = await mkdtemp(join(tmpdir(), "ctrexec-cwd-outside-"));
        try {
          await chmod(outside, 0o700);
          const before = await stat(outside);
          let swapped = 0;
          await assert.rejects(
            ensureCwd(root, cwd, 4321, 4321, (step, hostPath) => {
              if (step !== "created" || hostPath !== join(root, "race/a")) return;
              rmdirSync(hostPath);
              symlinkSync(link(outside, hostPath), hostPath);
              swapped++;
            }),
            (e: unknown) => e instanceof UnknownError && /replaced by a symlink/.test(e.message),
          );
          assert.equal(swapped, 1, "the hook ran once, between the creation and the chown");
          const after = await stat(outside);
          assert.deepEqual([after.mode & 0o7777, after.uid, after.gid], [0o700, before.uid, before.gid], "the host dir was chmod'ed or chown'ed");
          assert.deepEqual(await readdir(outside), [], "something was created outside the root");
        } finally {
          await rm(outside, { recursive: true, force: true });
          await rm(join(root, "race"), { recursive: true, force: true });
        }
      });
    }
  }

  it("leaves a directory made by a concurrent creator alone and goes on through it", async () => {
    await ensureCwd(root, "/racing/x/y", 77, 77, (_step, hostPath) => {
      // Another creator makes the next component first: our mkdirat of it meets EEXIST.
      if (hostPath === join(root, "racing/x")) mkdirSync(join(hostPath, "y"), { mode: 0o700 });
    });
    const y = await stat(join(root, "racing/x/y"));
    assert.deepEqual([y.mode & 0o777, y.uid], [0o700, 0], "an existing component was chmod'ed or chown'ed");
    // x had y in it before we looked at it: not provably the directory we made (see the exchange tests below),
    // so it was not given to the user either.
    assert.equal((await stat(join(root, "racing/x"))).uid, 0);
  });

  // Item 4: between our mkdirat and our open, a container exchanges the new name with a directory of its own
  // in the same parent (RENAME_EXCHANGE; here two renames at exactly that step). That directory is not ours and
  // must not be chmod'ed or chown'ed to the run's user.
  for (const [kind, fill] of [
    ["non-empty, owned by root", (d: string) => writeFileSync(join(d, "f"), "x")],
    ["empty, owned by another user", (d: string) => chownSync(d, 555, 555)],
  ] as const) {
    it(`never chmods or chowns a directory exchanged for the one just made (${kind})`, async () => {
      const other = join(root, "theirs");
      mkdirSync(other, { mode: 0o700 });
      fill(other);
      const before = statSync(other);
      try {
        await ensureCwd(root, "/swap/a", 4321, 4321, (_step, hostPath) => {
          if (hostPath !== join(root, "swap")) return;
          renameSync(hostPath, join(root, "ours-moved"));
          renameSync(other, hostPath);
        });
        const after = statSync(join(root, "swap"));
        assert.equal(after.ino, before.ino, "the exchanged directory is at the name");
        assert.deepEqual([after.mode & 0o7777, after.uid, after.gid], [0o700, before.uid, before.gid], "it was chmod'ed or chown'ed");
        assert.equal(statSync(join(root, "swap/a")).uid, 4321, "the walk went on through it and made the rest");
      } finally {
        await rm(join(root, "swap"), { recursive: true, force: true });
        await rm(join(root, "ours-moved"), { recursive: true, force: true });
        await rm(other, { recursive: true, force: true });
      }
    });
  }

  it("rejects a relative cwd", async () => {
    await assert.rejects(ensureCwd(root, "relative", 0, 0), /must be an absolute path/);
  });
});
