import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createRunDir, removeRunDir, retireRunDir } from "../../src/executor/run-dirs.js";
import { AlreadyExistsError } from "../../src/errors.js";
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

  it("is never made twice: a live owner's dir of the same id is theirs, and nothing is left behind", async () => {
    const dir = await createRunDir(state, "ns", "same");
    await writeFile(join(dir, "hosts.x"), "theirs\n");
    await assert.rejects(createRunDir(state, "ns", "same"), (e: unknown) => e instanceof AlreadyExistsError && /belongs to a run of process/.test(e.message));
    assert.deepEqual((await readdir(dir)).sort(), ["hosts.x", "owner"]);
    assert.equal((await readFile(join(dir, "owner"), "utf8")).trim(), ownerId());
    assert.deepEqual(await readdir(join(state, "runs", "ns")), ["same"], "no temporary dir may stay");
    await removeRunDir(dir);
  });

  it("takes over the dir a dead process left, with whatever it held", async () => {
    const dir = join(state, "runs", "ns", "stale");
    await mkdir(join(dir, "mount-abc"), { recursive: true });
    await writeFile(join(dir, "owner"), `${hostname()}/999999999/0`);
    assert.equal(await createRunDir(state, "ns", "stale"), dir);
    assert.deepEqual(await readdir(dir), ["owner"]);
    assert.equal((await readFile(join(dir, "owner"), "utf8")).trim(), ownerId());
    await removeRunDir(dir);
  });

  it("retires a finished run's dir out of its id's way at once", async () => {
    const dir = await createRunDir(state, "ns", "again");
    const retired = retireRunDir(dir);
    assert.ok(retired && retired !== dir && existsSync(join(retired, "owner")));
    assert.equal(existsSync(dir), false);
    assert.equal(await createRunDir(state, "ns", "again"), dir, "the id is free again");
    await removeRunDir(retired);
    await removeRunDir(dir);
    assert.equal(retireRunDir(dir), undefined, "a dir already gone is fine");
    assert.deepEqual(await readdir(join(state, "runs", "ns")), []);
  });
});
