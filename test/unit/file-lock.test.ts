import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { FailedPreconditionError, InvalidArgumentError } from "../../src/errors.js";
import { withFileLock } from "../../src/fs/file-lock.js";

function lockFile(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "ctrexec-file-lock-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, "ranges.lock");
}

/** Whether another process can take the lock now: flock(1) -n fails at once instead of waiting. */
function otherProcessCanLock(path: string): boolean {
  const r = spawnSync("flock", ["-n", "-E", "75", path, "true"], { encoding: "utf8" });
  assert.ok(r.status === 0 || r.status === 75, `flock(1): ${r.status} ${r.stderr}`);
  return r.status === 0;
}

describe("withFileLock", () => {
  it("holds an exclusive lock other processes see while fn runs, and releases it after", (t) => {
    const path = lockFile(t);
    const result = withFileLock(path, () => {
      assert.equal(otherProcessCanLock(path), false, "held: another process is refused");
      return 42;
    });
    assert.equal(result, 42);
    assert.equal(otherProcessCanLock(path), true, "released");
    assert.equal(statSync(path).mode & 0o777, 0o600);
  });

  it("releases the lock when fn throws, and rethrows", (t) => {
    const path = lockFile(t);
    const boom = new Error("boom");
    assert.throws(
      () =>
        withFileLock(path, () => {
          throw boom;
        }),
      (e: unknown) => e === boom,
    );
    assert.equal(otherProcessCanLock(path), true);
  });

  it("refuses a nested lock of the same file (it would wait forever) and an async fn", (t) => {
    const path = lockFile(t);
    withFileLock(path, () => {
      assert.throws(() => withFileLock(path, () => 1), FailedPreconditionError);
      assert.equal(otherProcessCanLock(path), false, "still held after the refused nested call");
    });
    assert.throws(() => withFileLock(path, async () => 1), InvalidArgumentError);
    assert.equal(otherProcessCanLock(path), true);
    assert.equal(
      withFileLock(path, () => "again"),
      "again",
    );
  });

  it("waits for a lock another process holds, until it lets go", async (t) => {
    const path = lockFile(t);
    const marker = `${path}.released`;
    // The holder lets go only once it sees this process blocked in flock(2) (/proc/PID/syscall starts with the
    // syscall's number), and leaves a marker first: fn finding it proves the wait, with no timing involved.
    const nr = process.arch === "x64" ? 73 : 32;
    const script = `echo held; while ! grep -q '^${nr} ' /proc/${process.pid}/syscall; do :; done; touch ${marker}`;
    const holder = spawn("flock", [path, "sh", "-c", script], { stdio: ["ignore", "pipe", "inherit"] });
    const exited = once(holder, "exit");
    await once(holder.stdout, "data");
    assert.equal(otherProcessCanLock(path), false);
    assert.equal(
      withFileLock(path, () => existsSync(marker)),
      true,
    );
    assert.deepEqual(await exited, [0, null]);
  });
});
