import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { usernsLines } from "../../src/cli/commands/info.js";
import { filesystemOf } from "../../src/executor/diagnose-userns.js";
import type { MountInfo } from "../../src/fs/mountinfo.js";

const mount = (id: number, mountPoint: string, fsType: string): MountInfo => ({
  id,
  parent: 1,
  device: "0:0",
  root: "/",
  mountPoint,
  options: "rw",
  fsType,
  source: "none",
  superOptions: "rw",
});

describe("ctrexec info: user namespaces", () => {
  it("names the filesystem of the deepest mount holding a path, the top one of stacked mounts", () => {
    // Paths that do not exist on the host, so that no symlink of its own resolves them elsewhere.
    const d = "/ctrexec-h3-none";
    const mounts = [mount(1, "/", "ext4"), mount(2, `${d}/lib`, "xfs"), mount(3, `${d}/lib/x`, "tmpfs"), mount(4, `${d}/lib/x`, "overlay")];
    assert.equal(filesystemOf(`${d}/a`, mounts), "ext4");
    assert.equal(filesystemOf(`/other${d}/lib/a`, mounts), "ext4");
    assert.equal(filesystemOf(`${d}/lib`, mounts), "xfs");
    assert.equal(filesystemOf(`${d}/libx`, mounts), "ext4", "a mount point is a whole path component");
    assert.equal(filesystemOf(`${d}/lib/x/y`, mounts), "overlay");
    assert.equal(filesystemOf(`${d}/a`, []), "?");
  });

  it("prints the kernel's support, then one line per idmap check with the reason of a refusal", () => {
    const lines = usernsLines({
      supported: true,
      maxUserNamespaces: 96369,
      idmap: [
        { what: "state dir", path: "/var/lib/ctrexec", probed: "/var/lib/ctrexec", fsType: "ext4", supported: true },
        { what: "default rootfs", path: "/s/rootfs/busybox-v2", probed: "/s", fsType: "ext4", supported: true },
        {
          what: "snapshotter overlayfs",
          path: "/srv/c",
          probed: "/srv/c",
          fsType: "nfs",
          supported: false,
          errno: "EINVAL",
          reason: "the filesystem does not support idmapped mounts",
        },
      ],
    });
    assert.deepEqual(lines, [
      "user namespaces:  yes (up to 96369)",
      "idmapped mounts:  yes on state dir /var/lib/ctrexec (ext4)",
      "                  yes on default rootfs /s/rootfs/busybox-v2 (not made yet: probed /s) (ext4)",
      "                  NO on snapshotter overlayfs /srv/c (nfs): EINVAL: the filesystem does not support idmapped mounts",
    ]);
    assert.deepEqual(usernsLines({ supported: false, maxUserNamespaces: 0, idmap: [] }), [
      "user namespaces:  NO: /proc/sys/user/max_user_namespaces is 0 (--userns auto and --uidmap fail)",
    ]);
    assert.match(usernsLines({ supported: false, maxUserNamespaces: null, idmap: [] })[0]!, /NO: the kernel has none/);
  });
});
