import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { compactLowerdirs } from "../../src/executor/local-mount.js";

describe("compactLowerdirs", () => {
  it("makes lowerdirs relative to their common parent", () => {
    const r = compactLowerdirs([
      "index=off",
      "lowerdir=/var/lib/s/snapshots/3/fs:/var/lib/s/snapshots/2/fs:/var/lib/s/snapshots/1/fs",
      "upperdir=/u",
    ]);
    assert.deepEqual(r, { options: ["index=off", "lowerdir=3/fs:2/fs:1/fs", "upperdir=/u"], cwd: "/var/lib/s/snapshots" });
  });
  it("leaves options alone without a useful common parent", () => {
    assert.deepEqual(compactLowerdirs(["lowerdir=/a/x:/b/y"]), { options: ["lowerdir=/a/x:/b/y"] });
    assert.deepEqual(compactLowerdirs(["lowerdir=/a/x"]), { options: ["lowerdir=/a/x"] });
    assert.deepEqual(compactLowerdirs(["ro"]), { options: ["ro"] });
  });
});
