import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, realpath, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
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

  it("rejects a relative cwd", async () => {
    await assert.rejects(ensureCwd(root, "relative", 0, 0), /must be an absolute path/);
  });
});
