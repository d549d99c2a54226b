import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { UnknownError } from "../../src/errors.js";
import { mkdirAt, O, openAt } from "../../src/fs/in-root.js";
import { mountPointsUnder } from "../../src/fs/mountinfo.js";
import { removeTree, removeTreeFdRelative, useRmForRemoveTreeForTests } from "../../src/fs/remove-tree.js";

/*
 * removeTree on a tree a live container still writes (issue #17: an overlay's upper dir whose task could not be
 * deleted). The racer (test/helpers/racer.c) swaps a directory of the tree and a symlink to a host directory
 * with renameat2(RENAME_EXCHANGE) while the tree is removed: a path-based recursive removal (Node's rm) then
 * reads and unlinks through the link and deletes the host's files.
 */

const MARKERS = 2000;

describe("removeTree against a racing writer, deep trees and mounts (root)", { concurrency: false }, () => {
  let base: string;
  let racer: string;
  before(() => {
    base = realpathSync(mkdtempSync(join(tmpdir(), "ctrexec-rmtree-")));
    racer = join(base, "racer");
    const source = fileURLToPath(new URL("../../../test/helpers/racer.c", import.meta.url));
    execFileSync("cc", ["-O2", "-Wall", "-o", racer, source]);
  });
  after(() => {
    useRmForRemoveTreeForTests(false);
    for (const m of mountPointsUnder(base).reverse()) execFileSync("umount", ["-l", m]);
    rmSync(base, { recursive: true, force: true });
  });

  /** Runs the racer on `a` and `b` until `fn` is done, then stops it and waits for its exit. */
  async function racing<T>(a: string, b: string, fn: () => Promise<T>): Promise<T> {
    const stop = join(base, `stop-${Math.random()}`);
    const child = spawn(racer, ["pair", a, b, stop, "100000000"], { stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise<void>((r) => child.on("close", () => r()));
    await new Promise<void>((r) => child.stdout.on("data", (d: Buffer) => d.toString().includes("racing") && r()));
    try {
      return await fn();
    } finally {
      writeFileSync(stop, "");
      await exited;
    }
  }

  for (const impl of ["native", "rm"] as const) {
    it(`(${impl}) a directory swapped for a symlink to a host directory while the tree is removed: no host file is touched`, async () => {
      useRmForRemoveTreeForTests(impl === "rm");
      const host = join(base, `host-${impl}`);
      mkdirSync(host);
      for (let i = 0; i < MARKERS; i++) writeFileSync(join(host, `m${i}`), "host");
      // Three rounds: the old removal deleted ~70% of the host files in one.
      for (let round = 0; round < 3; round++) {
        const run = join(base, `run-${impl}-${round}`);
        const upper = join(run, "upper");
        mkdirSync(join(upper, "x"), { recursive: true });
        for (let i = 0; i < MARKERS; i++) writeFileSync(join(upper, "x", `m${i}`), "inside");
        symlinkSync(host, join(upper, "l"));
        let failure: unknown;
        await racing(join(upper, "x"), join(upper, "l"), () => removeTree(run).catch((err: unknown) => (failure = err)));
        assert.equal(readdirSync(host).length, MARKERS, `round ${round}: host files were deleted`);
        if (failure !== undefined) {
          // The racer kept the tree changing: a typed error, and what it left is still inside the run dir.
          assert.ok(failure instanceof UnknownError, String(failure));
          await removeTree(run);
        }
        assert.equal(existsSync(run), false);
      }
    });
  }

  it("ends against a writer that keeps filling the tree: removed, or a typed error naming it", async () => {
    useRmForRemoveTreeForTests(false);
    const top = join(base, "live");
    mkdirSync(join(top, "x"), { recursive: true });
    const stop = join(base, "stop-writer");
    // Recreates what is removed as fast as it can (mkdir -p makes the top again once it is gone).
    const writer = spawn(
      "sh",
      ["-c", 'while [ ! -e "$1" ]; do mkdir -p "$2/x/y" 2>/dev/null; : > "$2/x/y/f" 2>/dev/null; : > "$2/f$$" 2>/dev/null; done', "sh", stop, top],
      { stdio: "ignore" },
    );
    const exited = new Promise<void>((r) => writer.on("close", () => r()));
    let outcome: unknown = "removed";
    try {
      for (let i = 0; i < 5; i++) await removeTree(top).catch((err: unknown) => (outcome = err));
    } finally {
      writeFileSync(stop, "");
      await exited;
    }
    if (outcome !== "removed") {
      assert.ok(outcome instanceof UnknownError, String(outcome));
      assert.match((outcome as Error).message, /live/);
    }
    await removeTree(top);
    assert.equal(existsSync(top), false);
  });

  it("removes nothing for a path with a NUL byte (C would see a shorter path: another directory)", async () => {
    useRmForRemoveTreeForTests(false);
    const kept = join(base, "kept");
    mkdirSync(kept);
    await assert.rejects(removeTree(`${kept}\0/x`), UnknownError);
    assert.equal(existsSync(kept), true);
  });

  it("removes a directory chain 5000 deep (beyond PATH_MAX), with a file at the bottom", async () => {
    useRmForRemoveTreeForTests(false);
    const top = join(base, "deep");
    mkdirSync(top);
    let fd = openSync(top, O.RDONLY | O.DIRECTORY);
    for (let i = 0; i < 5000; i++) {
      mkdirAt(fd, "d", 0o755);
      const next = openAt(fd, "d", O.RDONLY | O.DIRECTORY);
      closeSync(fd);
      fd = next;
    }
    writeFileSync(`/proc/self/fd/${fd}/bottom`, "x");
    closeSync(fd);
    await removeTree(top);
    assert.equal(existsSync(top), false);
  });

  it("detaches only the outermost mounts below: a directory on the way to a deeper one swapped for a symlink is not followed", async () => {
    useRmForRemoveTreeForTests(false);
    const top = join(base, "outer");
    const sub = join(top, "sub"); // a source mounted in the run dir (ctrexec's own path)
    const victimParent = join(base, "victim-parent");
    const victim = join(victimParent, "tmp"); // stands for a host mount elsewhere
    mkdirSync(sub, { recursive: true });
    mkdirSync(victim, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "tmpfs", sub]);
    mkdirSync(join(sub, "cache", "tmp"), { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "tmpfs", join(sub, "cache", "tmp")]); // a submount of the source
    execFileSync("mount", ["-t", "tmpfs", "tmpfs", victim]);
    writeFileSync(join(victim, "kept"), "x");
    try {
      let swapped = false;
      // The container's move, at the worst moment: right before ctrexec's first unmount.
      const detach = async (target: string) => {
        if (!swapped) {
          swapped = true;
          execFileSync("mv", [join(sub, "cache"), join(sub, "cache.old")]);
          symlinkSync(victimParent, join(sub, "cache"));
        }
        const { unmountDetached } = await import("../../src/fs/mount.js");
        await unmountDetached(target);
      };
      await removeTree(top, detach);
      assert.equal(existsSync(top), false);
      assert.deepEqual(mountPointsUnder(victim), [victim], "the host mount was detached through the symlink");
      assert.equal(existsSync(join(victim, "kept")), true);
    } finally {
      for (const m of mountPointsUnder(base)
        .filter((m) => m.startsWith(victimParent) || m.startsWith(top))
        .reverse())
        execFileSync("umount", ["-l", m]);
    }
  });

  it("finds the mounts of a tree named through a symlink (mountinfo shows real paths)", async () => {
    useRmForRemoveTreeForTests(true); // rm's --one-file-system would go into a bind of the same filesystem
    const state = join(base, "real-state"); // a state dir, named below through a symlink to it
    const top = join(state, "run");
    const src = join(base, "bind-src-2");
    const mnt = join(top, "mount");
    mkdirSync(mnt, { recursive: true });
    mkdirSync(src);
    writeFileSync(join(src, "precious"), "x");
    execFileSync("mount", ["--bind", src, mnt]);
    const link = join(base, "link-to-state");
    symlinkSync(state, link);
    try {
      await removeTree(join(link, "run")).catch(() => {});
      assert.equal(existsSync(join(src, "precious")), true, "the bind source's files were deleted");
    } finally {
      useRmForRemoveTreeForTests(false);
      for (const m of mountPointsUnder(top).reverse()) execFileSync("umount", ["-l", m]);
    }
  });

  // removeTree detaches the mounts it sees in mountinfo first (mountinfo.test.ts); the walk itself must not
  // enter one either (one mounted after that check, or in a state the check misread).
  for (const kind of ["tmpfs", "bind of the same filesystem"] as const) {
    it(`the walk never enters a mount below (${kind}): it fails naming it, the mounted files stay`, async () => {
      useRmForRemoveTreeForTests(false);
      const top = join(base, `mnt-${kind.split(" ")[0]}`);
      const mnt = join(top, "a", "mnt");
      mkdirSync(mnt, { recursive: true });
      writeFileSync(join(top, "a", "other"), "x");
      if (kind === "tmpfs") {
        execFileSync("mount", ["-t", "tmpfs", "tmpfs", mnt]);
      } else {
        const src = join(base, "bind-src");
        mkdirSync(src);
        execFileSync("mount", ["--bind", src, mnt]);
      }
      writeFileSync(join(mnt, "kept"), "x");
      try {
        await assert.rejects(removeTreeFdRelative(top), (err: NodeJS.ErrnoException) => {
          assert.equal(err.code, "EBUSY");
          assert.match(err.message, /a mount point is left below .*\/a\/mnt/);
          return true;
        });
        assert.equal(existsSync(join(mnt, "kept")), true, "the mounted filesystem was emptied");
      } finally {
        execFileSync("umount", ["-l", mnt]);
      }
      await removeTree(top);
      assert.equal(existsSync(top), false);
    });
  }
});
