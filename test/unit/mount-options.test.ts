import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { tooLongForTheKernel } from "../../src/executor/local-mount.js";
import { parseMountOptions } from "../../src/fs/mount.js";

describe("parseMountOptions", () => {
  it("turns flag options into mount(2) flags and keeps the rest as filesystem data, in order", () => {
    assert.deepEqual(parseMountOptions(["index=off", "lowerdir=/a:/b", "upperdir=/u", "workdir=/w"]), {
      flags: 0,
      data: "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w",
    });
    assert.deepEqual(parseMountOptions(["ro", "nosuid", "nodev", "noexec"]), { flags: 0x1 | 0x2 | 0x4 | 0x8, data: "" });
    assert.deepEqual(parseMountOptions(["rbind"]), { flags: 0x1000 | 0x4000, data: "" });
    assert.deepEqual(parseMountOptions(["size=65536k", "mode=1777", "nosuid"]), { flags: 0x2, data: "size=65536k,mode=1777" });
  });

  it("lets a later option undo an earlier one, like mount(8)", () => {
    assert.equal(parseMountOptions(["ro", "rw"]).flags, 0);
    assert.equal(parseMountOptions(["rw", "ro"]).flags, 0x1);
    assert.equal(parseMountOptions(["nosuid", "suid", "noatime", "atime"]).flags, 0);
    assert.equal(parseMountOptions(["defaults"]).flags, 0);
  });
});

describe("tooLongForTheKernel", () => {
  it("is true only for overlay options that would not fit the kernel's page", () => {
    const layers = Array.from({ length: 60 }, (_, i) => `/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/${i}/fs`);
    assert.equal(tooLongForTheKernel({ type: "overlay", options: [`lowerdir=${layers.join(":")}`] }), true);
    assert.equal(tooLongForTheKernel({ type: "overlay", options: [`lowerdir=${layers.slice(0, 3).join(":")}`] }), false);
    assert.equal(tooLongForTheKernel({ type: "bind", options: [`x=${"y".repeat(5000)}`] }), false);
  });
});
