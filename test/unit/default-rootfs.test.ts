import assert from "node:assert/strict";
import { mkdtemp, readFile, readlink, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { defaultRootfsPath, ensureDefaultRootfs } from "../../src/rootfs/default-rootfs.js";

describe("default rootfs", () => {
  let state: string;
  before(async () => {
    state = await mkdtemp(join(tmpdir(), "ctrexec-rootfs-"));
  });
  after(() => rm(state, { recursive: true, force: true }));

  it("is built once, also when asked concurrently", async () => {
    const paths = await Promise.all([ensureDefaultRootfs(state), ensureDefaultRootfs(state), ensureDefaultRootfs(state)]);
    assert.deepEqual(new Set(paths), new Set([defaultRootfsPath(state)]));
    const st = await stat(join(paths[0]!, "bin", "busybox"));
    assert.ok(st.isFile() && (st.mode & 0o111) !== 0);
  });

  it("has busybox applet links, users, groups and a sticky /tmp", async () => {
    const root = await ensureDefaultRootfs(state);
    assert.equal(await readlink(join(root, "bin", "sh")), "/bin/busybox");
    const passwd = await readFile(join(root, "etc", "passwd"), "utf8");
    for (const line of ["root:x:0:0:", "daemon:x:1:1:", "nobody:x:65534:65534:", "user:x:1000:1000:"]) {
      assert.ok(passwd.includes(line), `passwd lacks ${line}`);
    }
    const group = await readFile(join(root, "etc", "group"), "utf8");
    for (const line of ["root:x:0:", "daemon:x:1:", "nobody:x:65534:", "user:x:1000:"]) {
      assert.ok(group.includes(line), `group lacks ${line}`);
    }
    assert.equal((await stat(join(root, "tmp"))).mode & 0o7777, 0o1777);
    const home = await stat(join(root, "home", "user"));
    assert.equal(home.uid, 1000);
  });
});
