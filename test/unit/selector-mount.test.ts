import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { mountSubPath } from "../../src/executor/selector-mount.js";
import { silentLogger } from "../../src/util/logger.js";
import { ReleaseStack } from "../../src/util/release-stack.js";

/** Mount points in this mount namespace at or below `dir` (to assert nothing stays mounted). */
function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
}

describe("mountSubPath (item 1: a selector is mounted from the fd that was checked)", () => {
  let base: string;
  let source: string;
  let outside: string;
  let runDir: string;
  let stack: ReleaseStack;
  beforeEach(() => {
    base = realpathSync(mkdtempSync(join(tmpdir(), "ctrexec-subpath-")));
    source = join(base, "source");
    outside = join(base, "outside");
    runDir = join(base, "run");
    for (const d of [join(source, "sel/deeper"), outside, runDir]) mkdirSync(d, { recursive: true });
    writeFileSync(join(source, "sel/deeper/marker"), "inside");
    writeFileSync(join(source, "file"), "a file");
    writeFileSync(join(outside, "marker"), "outside");
    stack = new ReleaseStack();
  });
  afterEach(async () => {
    await stack.release();
    assert.deepEqual(mountsUnder(base), [], "a mount was left");
    rmSync(base, { recursive: true, force: true });
  });

  const opts = (extra: Partial<Parameters<typeof mountSubPath>[2]> = {}) => ({
    dest: "/mnt",
    readonly: false,
    runDir,
    stack,
    logger: silentLogger,
    ...extra,
  });

  for (const at of ["sel", "sel/deeper"]) {
    it(`mounts what was checked even when ${at} is swapped for a symlink out of the source right after the check`, async () => {
      let swapped = false;
      const target = await mountSubPath(
        source,
        "sel/deeper",
        opts({
          onStep: () => {
            // The racer's move (a container sharing the source, renameat2 RENAME_EXCHANGE in a real race).
            renameSync(join(source, at), join(source, `${at}.moved`));
            symlinkSync(outside, join(source, at));
            swapped = true;
          },
        }),
      );
      assert.ok(swapped);
      assert.ok(target.startsWith(`${runDir}/`), `mounted on ${target}, not in the run dir`);
      assert.deepEqual(readdirSync(target), ["marker"]);
      assert.equal(readFileSync(join(target, "marker"), "utf8"), "inside", "the host dir was mounted");
    });
  }

  it("resolves symlinks inside the source, never to the host's paths", async () => {
    symlinkSync(outside, join(source, "abs"));
    await assert.rejects(mountSubPath(source, "abs", opts()), (e: unknown) => e instanceof InvalidArgumentError && e.field === "mounts");
    symlinkSync("/sel", join(source, "in-root"));
    const target = await mountSubPath(source, "in-root/deeper", opts());
    assert.equal(readFileSync(join(target, "marker"), "utf8"), "inside");
  });

  it("mounts a regular file on a file, and read-only when asked", async () => {
    const target = await mountSubPath(source, "/file", opts({ readonly: true }));
    assert.equal(readFileSync(target, "utf8"), "a file");
    assert.throws(() => writeFileSync(target, "x"), { code: "EROFS" });
    const dir = await mountSubPath(source, "sel", opts({ readonly: true }));
    assert.throws(() => writeFileSync(join(dir, "new"), "x"), { code: "EROFS" });
  });

  it("refuses a missing selector, a FIFO and a device, before mounting anything", async () => {
    execFileSync("mkfifo", [join(source, "fifo")]);
    execFileSync("mknod", [join(source, "dev"), "c", "1", "3"]);
    for (const sel of ["missing", "fifo", "dev", "file/below"]) {
      await assert.rejects(mountSubPath(source, sel, opts()), (e: unknown) => e instanceof InvalidArgumentError && e.field === "mounts", sel);
    }
    assert.deepEqual(readdirSync(runDir), []);
  });

  it("unmounts and removes its mount point at release", async () => {
    const target = await mountSubPath(source, "sel", opts());
    assert.equal(mountsUnder(base).length, 1);
    await stack.release();
    assert.deepEqual(mountsUnder(base), []);
    assert.deepEqual(readdirSync(runDir), [], `${target} was left`);
    assert.deepEqual(readdirSync(join(source, "sel/deeper")), ["marker"], "the source was touched");
  });
});
