import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { decodeMountinfoField, mountPointsUnder, parseMountinfo, readMountinfo } from "../../src/fs/mountinfo.js";
import { removeTree } from "../../src/fs/remove-tree.js";

describe("mountinfo", () => {
  it("decodes the kernel's octal escapes: space, tab, newline, backslash, and any \\ooo", () => {
    assert.equal(decodeMountinfoField("/tmp/a\\040b"), "/tmp/a b");
    assert.equal(decodeMountinfoField("/t\\011ab/n\\012l/b\\134s"), "/t\tab/n\nl/b\\s");
    assert.equal(decodeMountinfoField("/x\\303\\251"), "/xé", "escaped bytes of one UTF-8 character");
    assert.equal(decodeMountinfoField("/ünï\\040côdé"), "/ünï côdé");
    assert.equal(decodeMountinfoField("/plain"), "/plain");
    assert.equal(decodeMountinfoField("/not\\08\\1"), "/not\\08\\1", "not three octal digits: left as it is");
  });

  it("parses lines with and without optional fields", () => {
    const text = [
      "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue",
      "51 27 0:40 / /tmp/x rw,relatime - overlay over\\040lay rw,lowerdir=/a",
      "garbage",
      "",
    ].join("\n");
    const m = parseMountinfo(text);
    assert.equal(m.length, 2);
    assert.deepEqual(
      { ...m[0] },
      {
        id: 36,
        parent: 35,
        device: "98:0",
        root: "/mnt1",
        mountPoint: "/mnt/a b",
        options: "rw,noatime",
        fsType: "ext3",
        source: "/dev/root",
        superOptions: "rw,errors=continue",
      },
    );
    assert.equal(m[1]!.source, "over lay");
    assert.deepEqual(mountPointsUnder("/mnt/a b", m), ["/mnt/a b"]);
    assert.deepEqual(mountPointsUnder("/mnt/a", m), []);
  });

  describe("with a real mount (root)", () => {
    let dir: string;
    after(async () => {
      if (dir) {
        for (const m of mountPointsUnder(dir).reverse()) execFileSync("umount", ["-l", m]);
        await rm(dir, { recursive: true, force: true });
      }
    });

    it("removeTree detaches a mount below a path with a space, tab and newline, then removes the tree", async () => {
      dir = await mkdtemp(join(tmpdir(), "ctrexec-test-ps a\tb\nc-"));
      const mnt = join(dir, "run dir", "mount");
      await mkdir(mnt, { recursive: true });
      execFileSync("mount", ["-t", "tmpfs", "tmpfs", mnt]);
      await writeFile(join(mnt, "kept"), "x");
      assert.deepEqual(
        readMountinfo()
          .filter((m) => m.mountPoint === mnt)
          .map((m) => m.mountPoint),
        [mnt],
        "the decoded mount point is the real path",
      );
      await removeTree(join(dir, "run dir"));
      assert.deepEqual(mountPointsUnder(dir), []);
      assert.equal(existsSync(join(dir, "run dir")), false);
    });

    it("removeTree never walks into a mount that would not detach: the tree stays, its files too", async () => {
      const dir = await mkdtemp(join(tmpdir(), "ctrexec-test-ps-"));
      const mnt = join(dir, "run", "mount");
      await mkdir(mnt, { recursive: true });
      execFileSync("mount", ["-t", "tmpfs", "tmpfs", mnt]);
      await writeFile(join(mnt, "kept"), "x");
      try {
        const busy = async () => {
          throw Object.assign(new Error("EBUSY: umount2"), { code: "EBUSY" });
        };
        await assert.rejects(removeTree(join(dir, "run"), busy), /could not be unmounted/);
        assert.equal(existsSync(join(mnt, "kept")), true, "the mounted filesystem was emptied");
      } finally {
        execFileSync("umount", ["-l", mnt]);
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});
