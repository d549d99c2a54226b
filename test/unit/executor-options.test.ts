import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { RECONNECT_BOUND_MS } from "../../src/containerd/wait.js";
import { InvalidArgumentError } from "../../src/errors.js";
import { DEFAULT_FIFO_ROOT, DEFAULT_STATE_DIR, normalizeOptions } from "../../src/executor/options.js";

function field(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof InvalidArgumentError, String(err));
    return err.field;
  }
  assert.fail("no error");
}

describe("normalizeOptions", () => {
  it("applies every default once", () => {
    const o = normalizeOptions({});
    assert.equal(o.root, DEFAULT_STATE_DIR);
    assert.equal(o.fifoRoot, DEFAULT_FIFO_ROOT);
    assert.equal(o.runtime, "io.containerd.runc.v2");
    assert.equal(o.reconnectBoundMs, RECONNECT_BOUND_MS);
    assert.deepEqual(o.shims, { kind: "reuse", idleMs: 10_000 });
    assert.equal(o.awaitCleanup, false);
    assert.equal(o.pruneOnStart, false);
    assert.equal(o.rootless, false);
    assert.deepEqual(o.networkProviders, {});
  });

  it("resolves the userns option: default host, the default pool, modes and pools checked", () => {
    const o = normalizeOptions({});
    assert.equal(o.userns.default, "host");
    assert.deepEqual(o.userns.pools, { uid: { start: 0x10000000, size: 65536 * 1024 }, gid: { start: 0x10000000, size: 65536 * 1024 } });
    assert.equal(normalizeOptions({ userns: { default: "auto" } }).userns.default, "auto");
    const maps = { uidMap: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMap: [{ containerId: 0, hostId: 100000, size: 65536 }] };
    assert.deepEqual(normalizeOptions({ userns: { default: maps } }).userns.default, maps);
    assert.equal(
      field(() => normalizeOptions({ userns: { default: "keep-id" as "auto" } })),
      "userns.default",
    );
    assert.equal(
      field(() => normalizeOptions({ userns: { default: { uidMap: [], gidMap: [] } } })),
      "userns.default",
    );
    assert.equal(
      field(() => normalizeOptions({ userns: { default: "auto" }, rootless: true })),
      "userns.default",
    );
    assert.equal(
      field(() => normalizeOptions({ userns: { pool: { start: 100, size: 65536 } } })),
      "userns.pool",
    );
  });

  it("resolves the shims option into one policy", () => {
    assert.deepEqual(normalizeOptions({ shims: "off" }).shims, { kind: "off" });
    assert.deepEqual(normalizeOptions({ shims: "reuse", shimIdleMs: 5 }).shims, { kind: "reuse", idleMs: 5 });
    assert.deepEqual(normalizeOptions({ shims: { warm: 3 } }).shims, { kind: "warm", size: 3, idleMs: 30_000 });
    assert.deepEqual(normalizeOptions({ shims: { warm: "auto" }, shimIdleMs: 100 }).shims, { kind: "warm", size: "auto", idleMs: 100 });
    assert.deepEqual(normalizeOptions({ shims: { warm: 0 } }).shims, { kind: "reuse", idleMs: 10_000 });
    assert.deepEqual(normalizeOptions({ shims: { warm: 0 }, awaitCleanup: true }).shims, { kind: "off" });
    // awaitCleanup deletes every task before run() settles: nothing is kept for reuse.
    assert.deepEqual(normalizeOptions({ awaitCleanup: true }).shims, { kind: "off" });
    assert.deepEqual(normalizeOptions({ awaitCleanup: true, shims: { warm: 2 } }).shims, { kind: "warm", size: 2, idleMs: 30_000 });
  });

  it("refuses bad shim options, naming the field", () => {
    assert.equal(
      field(() => normalizeOptions({ shims: { warm: -1 } })),
      "shims",
    );
    assert.equal(
      field(() => normalizeOptions({ shims: { warm: 1.5 } })),
      "shims",
    );
    assert.equal(
      field(() => normalizeOptions({ shims: { warm: 257 } })),
      "shims",
    );
    assert.equal(
      field(() => normalizeOptions({ shims: "group" as never })),
      "shims",
    );
    assert.equal(
      field(() => normalizeOptions({ shims: null as never })),
      "shims",
    );
    assert.equal(
      field(() => normalizeOptions({ shims: "reuse", awaitCleanup: true })),
      "shims",
    );
    assert.equal(
      field(() => normalizeOptions({ shimIdleMs: -1 })),
      "shimIdleMs",
    );
    assert.equal(
      field(() => normalizeOptions({ shimIdleMs: Number.NaN })),
      "shimIdleMs",
    );
    assert.equal(
      field(() => normalizeOptions({ reconnectBoundMs: -5 })),
      "reconnectBoundMs",
    );
  });

  it("refuses a shim launcher that cannot work", () => {
    assert.equal(
      field(() => normalizeOptions({ shimLauncher: "relative/path" })),
      "shimLauncher",
    );
    const dir = mkdtempSync(join(tmpdir(), "ctrexec-options-"));
    try {
      const plain = join(dir, "not-executable");
      writeFileSync(plain, "", { mode: 0o644 });
      assert.equal(
        field(() => normalizeOptions({ shimLauncher: plain })),
        "shimLauncher",
      );
      assert.equal(
        field(() => normalizeOptions({ shimLauncher: dir })),
        "shimLauncher",
      );
    } finally {
      rmSync(dir, { recursive: true });
    }
    assert.equal(
      field(() => normalizeOptions({ shimLauncher: "/bin/true", runtime: "io.containerd.runsc.v1" })),
      "shimLauncher",
    );
    assert.equal(normalizeOptions({ shimLauncher: false }).shimLauncher, false);
  });

  it("checks dns and cgroupParent before anything is created", () => {
    assert.equal(
      field(() => normalizeOptions({ cgroupParent: "../escape" })),
      "cgroupParent",
    );
    assert.throws(() => normalizeOptions({ dns: { nameservers: ["not an ip"] } }), InvalidArgumentError);
  });
});
