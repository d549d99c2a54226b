import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { InvalidArgumentError } from "../../src/errors.js";
import { bindMountable } from "../../src/executor/mountables.js";
import type { MountSpec, RunResult } from "../../src/executor/types.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";
import { Collect } from "../helpers/streams.js";

/*
 * Items 1-3 of issue #17 as real races: a hostile container (test/helpers/racer.c) swaps a directory and a
 * symlink to a host directory outside its root with renameat2(RENAME_EXCHANGE), in a bounded loop, while runs
 * and execs of ctrexec work on the same tree. The host directory must never be mounted, chmod'ed, chown'ed,
 * written or read. A race can be lost by luck, so the fd-relative primitives are also tested deterministically
 * (test/unit/cwd, user, selector-mount, in-root); these show the whole path holds against a real container.
 */

const VICTIMS = 30;
/** Execs whose lookup fails cost ~0.1 ms each: many more of them, for the race to be run at all. */
const EXEC_VICTIMS = 3000;

/** The racer's stdout: `racing` resolves when it says it has started. */
class RacerOutput extends Collect {
  #racing!: () => void;
  readonly racing = new Promise<void>((r) => (this.#racing = r));
  override _write(chunk: Buffer, enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    super._write(chunk, enc, cb);
    if (this.text.includes("racing\n")) this.#racing();
  }
}
/** Swaps at most (a bound, whatever happens to the stop file): ~1 µs each. */
const MAX_SWAPS = 200_000_000;

/** A host directory a container must never reach: 0700 root:root with a few files. */
function hostDir(base: string, name: string, files: Record<string, string> = { marker: "host" }): { path: string; assertUntouched(): void } {
  const path = join(base, name);
  mkdirSync(path);
  for (const [f, content] of Object.entries(files)) writeFileSync(join(path, f), content);
  chmodSync(path, 0o700);
  const before = statSync(path);
  return {
    path,
    assertUntouched() {
      const now = statSync(path);
      assert.deepEqual([now.mode & 0o7777, now.uid, now.gid], [0o700, before.uid, before.gid], `${path} was chmod'ed or chown'ed`);
      assert.deepEqual(readdirSync(path).sort(), Object.keys(files).sort(), `something was created in ${path}`);
      for (const [f, content] of Object.entries(files)) assert.equal(readFileSync(join(path, f), "utf8"), content);
      assert.equal(now.mtimeMs, before.mtimeMs, `${path} was written`);
    },
  };
}

describe("host safety against a racing container (issue #17 items 1-3)", { concurrency: false }, () => {
  let env: ExecutorEnv;
  let base: string;
  let racer: string;
  before(async () => {
    env = await createExecutorEnv("hs-race");
    base = realpathSync(mkdtempSync(join(tmpdir(), "ctrexec-hs-")));
    racer = join(base, "racer");
    const source = fileURLToPath(new URL("../../../test/helpers/racer.c", import.meta.url));
    execFileSync("cc", ["-static", "-O2", "-Wall", "-o", racer, source]);
  });
  after(async () => {
    await env?.dispose();
    if (base) rmSync(base, { recursive: true, force: true });
  });

  /** A writable copy of the busybox rootfs, shared by the racer and the victims. */
  function sharedRoot(name: string): string {
    const root = join(base, name);
    execFileSync("cp", ["-a", env.rootfs, root]);
    copyFileSync(racer, join(root, "racer"));
    chmodSync(join(root, "racer"), 0o755);
    return root;
  }

  /**
   * Starts the racer (`bin` inside the container) in a container on `root` (the default rootfs when undefined)
   * with `mounts`; `stop()` ends it and returns its swap count.
   */
  function startRacer(root: string | undefined, bin: string, args: string[], stopFile: string, mounts: MountSpec[] = []) {
    const stdout = new RacerOutput();
    const stderr = new Collect();
    const started = stdout.racing;
    const done = env.executor.run({
      ...(root ? { root: { source: bindMountable(root) } } : {}),
      mounts,
      process: { meta: { args: [bin, ...args] }, stdout, stderr },
    });
    done.catch(() => {}); // awaited in stop()
    return {
      /** Resolves once the racer runs (its first line), rejects if its run ended first. */
      started: Promise.race([
        started,
        done.then((r) => Promise.reject(new Error(`the racer ended before racing: ${JSON.stringify(r)} ${stderr.text}`))),
      ]),
      async stop(): Promise<number> {
        writeFileSync(stopFile, "");
        const r: RunResult = await done;
        assert.equal(r.exitCode, 0, stderr.text);
        const swaps = Number(/(\d+) swaps/.exec(stdout.text)?.[1] ?? "0");
        assert.ok(swaps > 0, `the racer never swapped: ${stdout.text} ${stderr.text}`);
        return swaps;
      },
    };
  }

  it("a sub-path mount is never redirected to a host directory by a container sharing its source (item 1)", async (t) => {
    const host = hostDir(base, "host-sel");
    const source = join(base, "sel-source");
    mkdirSync(join(source, "d"), { recursive: true });
    writeFileSync(join(source, "d/marker"), "inside");
    symlinkSync(host.path, join(source, "l")); // the host dir's absolute path, as the host would follow it
    copyFileSync(racer, join(source, "racer"));
    const race = startRacer(undefined, "/s/racer", ["pair", "/s/d", "/s/l", "/s/stop", String(MAX_SWAPS)], join(source, "stop"), [
      { source: bindMountable(source), dest: "/s" },
    ]);
    const seen: Record<string, number> = {};
    try {
      await race.started;
      for (let i = 0; i < VICTIMS; i++) {
        const stdout = new Collect();
        const outcome = await env.executor
          .run({
            mounts: [{ source: bindMountable(source), dest: "/m", selector: "d", readonly: true }],
            process: { meta: { args: ["cat", "/m/marker"] }, stdout },
          })
          .then(
            () => stdout.text,
            (e: unknown) =>
              e instanceof InvalidArgumentError && /does not exist in its source/.test(e.message)
                ? "symlink at open: refused"
                : `failed: ${String(e)}`,
          );
        seen[outcome] = (seen[outcome] ?? 0) + 1;
      }
    } finally {
      t.diagnostic(`${await race.stop()} swaps; outcomes ${JSON.stringify(seen)}`);
    }
    assert.equal(seen["host"], undefined, `the host directory was mounted into a container: ${JSON.stringify(seen)}`);
    assert.deepEqual(
      Object.keys(seen).filter((k) => k !== "inside" && k !== "symlink at open: refused"),
      [],
      JSON.stringify(seen),
    );
    assert.ok((seen["inside"] ?? 0) > 0, `no run got as far as mounting: ${JSON.stringify(seen)}`);
    host.assertUntouched();
    assert.ok(lstatSync(join(source, "d")).isDirectory());
    await env.assertClean();
  });

  it("creating a working directory on a shared root never chmods, chowns or creates through a swapped-in symlink (item 2)", async (t) => {
    const host = hostDir(base, "host-cwd");
    const root = sharedRoot("cwd-root");
    mkdirSync(join(root, "race"));
    for (let i = 0; i <= VICTIMS; i++) {
      // Absolute, and relative climbing out with `..`: both as the host would follow them.
      symlinkSync(i % 2 ? host.path : relative(join(root, "race"), host.path), join(root, "race", `l${i}`));
    }
    const race = startRacer(root, "/racer", ["seq", "/race", "/race/stop", String(MAX_SWAPS)], join(root, "race/stop"));
    let refused = 0;
    const failures: Record<string, number> = {};
    try {
      await race.started;
      for (let i = 0; i < VICTIMS; i++) {
        // The run itself may fail (ours refuses a swapped component, or runc's chdir meets the symlink):
        // what matters is what happened on the host.
        await env.executor
          .run({ root: { source: bindMountable(root) }, process: { meta: { args: ["true"], user: "4321:4321", cwd: `/race/${i}/sub` } } })
          .catch((e: unknown) => {
            refused++;
            const kind = `${(e as Error).constructor.name}: ${(e as Error).message.replace(/\/race\/\d+/g, "/race/N").slice(0, 120)}`;
            failures[kind] = (failures[kind] ?? 0) + 1;
          });
      }
    } finally {
      t.diagnostic(`${await race.stop()} swaps; ${refused} of ${VICTIMS} runs failed: ${JSON.stringify(failures)}`);
    }
    // Nothing was made outside the root: the only place a followed symlink leads is the host dir.
    host.assertUntouched();
    // Every run got as far as creating its directory (the race was run): it is under one of the two names.
    for (let i = 0; i < VICTIMS; i++) {
      const dirs = [`${i}`, `l${i}`].filter((n) => lstatSync(join(root, "race", n)).isDirectory());
      assert.equal(dirs.length, 1, `run ${i} made no working directory`);
    }
    await env.assertClean();
  });

  it("an exec's user lookup never reads the host's passwd through a swapped /etc (item 3)", async (t) => {
    const host = hostDir(base, "host-etc", { passwd: "hostonly:x:4321:4321:planted on the host:/:/bin/sh\n" });
    const root = sharedRoot("etc-root");
    symlinkSync(host.path, join(root, "etcx"));
    const id = env.uniqueId("hs-sleeper");
    const ac = new AbortController();
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const sleeper = env.executor
      .run({
        id,
        root: { source: bindMountable(root) },
        process: { meta: { args: ["sleep", "300"] } },
        signal: ac.signal,
        onStarted: () => started(),
      })
      .catch((e: unknown) => e);
    await Promise.race([running, sleeper]);
    const race = startRacer(root, "/racer", ["pair", "/etc", "/etcx", "/stop", String(MAX_SWAPS)], join(root, "stop"));
    const outcomes: Record<string, number> = {};
    try {
      await race.started;
      for (let i = 0; i < EXEC_VICTIMS; i++) {
        const stdout = new Collect();
        const outcome = await env.executor.exec(id, { meta: { args: ["id", "-u"], user: "hostonly" }, stdout }).then(
          () => `ran as ${stdout.text.trim()}`,
          (e: unknown) => (e instanceof InvalidArgumentError && /unable to find user hostonly/.test(e.message) ? "not found" : String(e)),
        );
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      }
    } finally {
      t.diagnostic(`${await race.stop()} swaps; outcomes ${JSON.stringify(outcomes)}`);
      ac.abort();
      await sleeper;
    }
    assert.deepEqual(outcomes, { "not found": EXEC_VICTIMS }, "the host's /etc/passwd was read");
    host.assertUntouched();
    assert.ok(lstatSync(join(root, "etc")).isDirectory());
    await env.assertClean();
  });
});
