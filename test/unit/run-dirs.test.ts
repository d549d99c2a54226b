import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createRunDir, removeRunDir } from "../../src/executor/run-dirs.js";
import { ownerId } from "../../src/util/owner.js";

describe("run dirs", () => {
  let state: string;
  before(async () => {
    state = await mkdtemp(join(tmpdir(), "ctrexec-rundirs-"));
  });
  after(async () => {
    await rm(state, { recursive: true, force: true });
  });

  it("names the owner, and removes a dir that holds only that", async () => {
    const dir = await createRunDir(state, "ns", "a");
    assert.equal((await readFile(join(dir, "owner"), "utf8")).trim(), ownerId());
    await removeRunDir(dir);
    assert.equal(existsSync(dir), false);
  });

  it("removes whatever else a run left in it", async () => {
    const dir = await createRunDir(state, "ns", "b");
    await mkdir(join(dir, "rootfs", "deep"), { recursive: true });
    await writeFile(join(dir, "hosts"), "127.0.0.1 localhost\n");
    await removeRunDir(dir);
    assert.equal(existsSync(dir), false);
  });

  it("accepts a dir that is already gone, or lost its owner file", async () => {
    await removeRunDir(join(state, "runs", "ns", "never"));
    const dir = await createRunDir(state, "ns", "c");
    await rm(join(dir, "owner"));
    await removeRunDir(dir);
    assert.equal(existsSync(dir), false);
  });
});
