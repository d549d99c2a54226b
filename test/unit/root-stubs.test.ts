import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, realpath, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { MountStubsCleaner } from "../../src/executor/mount-stubs.js";
import { enterRoot, rootRegistryDir, settleRootRegistry } from "../../src/executor/root-stubs.js";
import { deadOwner } from "../helpers/owners.js";

describe("mount stubs shared by the runs on one root", () => {
  let state: string;
  let root: string;
  beforeEach(async () => {
    state = await realpath(await mkdtemp(join(tmpdir(), "ctrexec-rootstubs-")));
    root = join(state, "rootfs");
    await mkdir(join(root, "etc"), { recursive: true });
    await writeFile(join(root, "etc/resolv.conf"), "");
    await writeFile(join(root, "etc/hosts"), "");
  });
  afterEach(() => rm(state, { recursive: true, force: true }));

  /** A run's set-up as the executor does it: look for stubs, enter, then play runc making the mount point. */
  async function start(dest: string) {
    const stubs = await MountStubsCleaner.prepare(root, [dest], { recursive: true });
    const entry = enterRoot(state, root, stubs);
    await mkdir(join(root, dest), { recursive: true });
    return entry;
  }

  it("leaves a stub in place while any run on the root may use it, and the last run removes it", async () => {
    const a = await start("/data");
    assert.ok(a, "a run with a stub enters");
    // b starts after a's container made /data: not its stub, but its mount point too.
    const b = await start("/data");
    assert.ok(b, "a run on a root with recorded stubs enters, stubs of its own or not");
    await a.leave();
    assert.equal(existsSync(join(root, "data")), true, "removed under the other run's container");
    await b.leave();
    assert.equal(existsSync(join(root, "data")), false, "the last run removes every recorded stub");
    assert.equal(existsSync(rootRegistryDir(state, root)), false, "the registry goes with the last run");
  });

  it("records a stub whose path is longer than a file name may be", async () => {
    const deep = `/${Array.from({ length: 30 }, (_, i) => `level-${i}-${"x".repeat(6)}`).join("/")}`;
    const a = await start(deep);
    await a!.leave();
    assert.equal(existsSync(join(root, "level-0-xxxxxx")), false, "stubs and their created parents removed");
  });

  it("knows a root given through a symlink as the same root", async () => {
    await symlink(root, join(state, "alias"));
    assert.equal(rootRegistryDir(state, join(state, "alias")), rootRegistryDir(state, root));
  });

  it("costs nothing for runs without stubs on a root nobody recorded stubs for", async () => {
    await mkdir(join(root, "existing"));
    assert.equal(await start("/existing"), undefined);
    assert.deepEqual(await readdir(state), ["rootfs"]);
  });

  it("does not count runs of dead processes, and prune settles what they left", async () => {
    const a = await start("/data");
    const dir = rootRegistryDir(state, root);
    await writeFile(join(dir, "users", "dead"), deadOwner());
    await a!.leave();
    assert.equal(existsSync(join(root, "data")), false);
    assert.equal(existsSync(dir), false);

    // A process that died mid-run: its entry and records stay until a run leaves or prune comes.
    await start("/scratch/x");
    await writeFile(join(dir, "users", (await readdir(join(dir, "users")))[0]!), deadOwner());
    assert.equal(await settleRootRegistry(dir), true);
    assert.equal(existsSync(join(root, "scratch")), false);
  });

  it("keeps the records when a run enters while the last one is removing the stubs", async () => {
    const a = await start("/data");
    const dir = rootRegistryDir(state, root);
    // Another process's run, live (this process stands in for it), entered after a's check.
    const live = join(dir, "users", "other");
    const { ownerId } = await import("../../src/util/owner.js");
    // leave() checks for live runs, then removes the stubs asynchronously: the other run enters in between.
    const settled = a!.leave();
    writeFileSync(live, ownerId());
    await settled;
    assert.equal(existsSync(dir), true);
    assert.equal((await readdir(join(dir, "stubs"))).length, 1, "the records stay for the run that entered");
    await rm(live);
    assert.equal(await settleRootRegistry(dir), true);
  });
});
