import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AlreadyExistsError } from "../../src/errors.js";
import { createRunDir, removeRunDir, retireRunDir, runEntryOwner } from "../../src/executor/run-dirs.js";
import { ownerAlive, ownerId } from "../../src/util/owner.js";
import { deadOwner } from "../helpers/owners.js";

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
    await assert.rejects(
      createRunDir(state, "ns", "same"),
      (e: unknown) => e instanceof AlreadyExistsError && /belongs to a run of process/.test(e.message),
    );
    assert.deepEqual((await readdir(dir)).sort(), ["hosts.x", "owner"]);
    assert.equal((await readFile(join(dir, "owner"), "utf8")).trim(), ownerId());
    assert.deepEqual(await readdir(join(state, "runs", "ns")), ["same"], "no temporary dir may stay");
    await removeRunDir(dir);
  });

  it("takes over the dir a dead process left, with whatever it held", async () => {
    const dir = join(state, "runs", "ns", "stale");
    await mkdir(join(dir, "mount-abc"), { recursive: true });
    await writeFile(join(dir, "owner"), deadOwner());
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

  it("a run dir being made names its live owner from the moment it exists, before its owner file", async () => {
    // prune removes what names no live owner: a temporary dir that named none until its owner file was
    // written could go in between (the creator's writeFile then failed, or worse).
    const runs = join(state, "runs", "ns");
    let seen: { name: string; owner: string | undefined; hasFile: boolean } | undefined;
    const dir = await createRunDir(state, "ns", "young", {
      staged: async (tmp) => {
        seen = { name: basename(tmp), owner: await runEntryOwner(runs, basename(tmp)), hasFile: existsSync(join(tmp, "owner")) };
      },
    });
    assert.ok(seen, "the hook must run between the steps");
    assert.equal(seen.hasFile, false, "the hook runs before the owner file is written");
    assert.equal(seen.owner, ownerId());
    assert.equal(ownerAlive(seen.owner!), true, "prune must see a live owner");
    assert.ok(seen.name.startsWith(".new."), seen.name);
    assert.equal(await runEntryOwner(runs, "young"), ownerId(), "an ordinary run dir: its owner file");
    await removeRunDir(dir);
  });

  it("a run dir a dead process was making is its leftover; older temporary names go by their owner file", async () => {
    const runs = join(state, "runs", "ns");
    const dead = deadOwner();
    const staged = `.new.${Buffer.from(dead).toString("base64url")}.0123456789ab`;
    await mkdir(join(runs, staged), { recursive: true });
    assert.equal(await runEntryOwner(runs, staged), dead);
    assert.equal(ownerAlive(dead), false);
    await mkdir(join(runs, ".new-old-0123456789ab"));
    assert.equal(await runEntryOwner(runs, ".new-old-0123456789ab"), undefined);
    await writeFile(join(runs, ".new-old-0123456789ab", "owner"), dead);
    assert.equal(await runEntryOwner(runs, ".new-old-0123456789ab"), dead);
    await rm(join(runs, staged), { recursive: true });
    await rm(join(runs, ".new-old-0123456789ab"), { recursive: true });
  });
});
