import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { InvalidArgumentError } from "../../src/errors.js";
import { ContainerdExecutor } from "../../src/executor/executor.js";
import { bindMountable } from "../../src/executor/mountables.js";
import { builtShimLauncher } from "../../src/executor/shims/launcher.js";
import type { Logger } from "../../src/util/logger.js";
import { mountsUnder, parentPid } from "../helpers/env.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";

const CONTAINERD = "/run/containerd/containerd.sock";
const bundleOf = (ns: string, id: string) => `/run/containerd/io.containerd.runtime.v2.task/${ns}/${id}`;
const launcher = builtShimLauncher();

/** A directory with a stand-in containerd-shim-runc-v2 that reports how it was called and exits 3. */
function fakeRealShim(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "containerd-shim-runc-v2");
  writeFileSync(path, '#!/bin/sh\necho "REAL $*"\nexit 3\n');
  chmodSync(path, 0o755);
}

/** Runs the launcher in `cwd` with the given action, as containerd does (its flags, then -id, then the action). */
function launch(cwd: string, ns: string, id: string, action: string, opts: { path: string; address?: string; publish?: string }) {
  const args = ["-namespace", ns, "-address", opts.address ?? CONTAINERD, "-publish-binary", opts.publish ?? "/usr/bin/containerd", "-id", id];
  if (action === "delete") args.push("-bundle", cwd);
  args.push(action);
  const r = spawnSync(launcher!, args, { cwd, env: { PATH: opts.path }, encoding: "buffer", timeout: 10_000 });
  return { status: r.status, stdout: r.stdout, text: r.stdout.toString(), stderr: r.stderr.toString(), args };
}

/** The fields of a protobuf message: field number → varint value or bytes. */
function decodeMessage(buf: Buffer): Map<number, bigint | Buffer> {
  const out = new Map<number, bigint | Buffer>();
  let i = 0;
  const varint = () => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const b = buf[i++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return v;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    if ((key & 7) === 0) out.set(key >> 3, varint());
    else if ((key & 7) === 2) {
      const n = Number(varint());
      out.set(key >> 3, buf.subarray(i, i + n));
      i += n;
    } else throw new Error(`wire type ${key & 7}`);
  }
  return out;
}

describe("the shim launcher (native/shim-launcher.c)", { skip: launcher ? false : "build/ctrexec-shim is not built" }, () => {
  let env: ExecutorEnv;
  let scratch: string;
  let fakePath: string;
  /** The group of a shim kept running by the first test's founder. */
  let liveGroup = "";
  before(async () => {
    env = await createExecutorEnv("launcher");
    scratch = mkdtempSync(join(tmpdir(), "ctrexec-launcher-"));
    fakePath = join(scratch, "fake-bin");
    fakeRealShim(fakePath);
  });
  after(async () => {
    for (const m of mountsUnder(scratch).reverse()) spawnSync("umount", ["-l", m]);
    rmSync(scratch, { recursive: true, force: true });
    await env.dispose();
  });

  /** A bundle-like directory named `id`, with `config` as its config.json. */
  function bundle(id: string, config?: string): string {
    const dir = join(scratch, randomBytes(4).toString("hex"), id);
    mkdirSync(join(dir, "rootfs"), { recursive: true });
    if (config !== undefined) writeFileSync(join(dir, "config.json"), config);
    return dir;
  }
  const specWith = (annotations: string) => `{"ociVersion":"1.0.2","process":{"args":["true"]},"annotations":${annotations},"linux":{}}`;

  it("answers start with the live shim the runc v2 shim would pick, and writes the bundle's address file", async () => {
    // The first run of a fresh executor starts its shim through containerd-shim-runc-v2's own start, which
    // writes the address it computed: the launcher must compute the same from the same group.
    let founder = { config: "", address: "" };
    await env.executor.run({
      root: { source: bindMountable(env.rootfs) },
      process: { meta: { args: ["sleep", "0.5"] } },
      onStarted: ({ id }) => {
        founder = {
          config: readFileSync(join(bundleOf(env.namespace, id), "config.json"), "utf8"),
          address: readFileSync(join(bundleOf(env.namespace, id), "address"), "utf8"),
        };
      },
    });
    assert.match(founder.address, /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    liveGroup = /"io\.containerd\.runc\.v2\.group":"([^"]+)"/.exec(founder.config)?.[1] ?? "";
    assert.notEqual(liveGroup, "");
    // The founder's stopped task keeps its shim (shim reuse), so the group's socket answers now.
    const dir = bundle("joiner", founder.config);
    const r = launch(dir, env.namespace, "joiner", "start", { path: fakePath });
    assert.equal(r.status, 0, r.text + r.stderr);
    assert.equal(r.text, founder.address);
    assert.equal(readFileSync(join(dir, "address"), "utf8"), founder.address);
    assert.ok(!existsSync(join(dir, ".address")));
  });

  it("hands start to the real shim whenever it cannot be sure", () => {
    const cases: [string, string | undefined, { address?: string }?][] = [
      ["no config.json", undefined],
      ["no group annotation", specWith('{"a":"b"}')],
      ["a group whose shim is not running", specWith(`{"io.containerd.runc.v2.group":"nobody-${randomBytes(4).toString("hex")}"}`)],
      // Each of these names the live group in a form the launcher must not take at face value.
      ["an escaped group value", specWith(`{"io.containerd.runc.v2.group":"\\u00${liveGroup.charCodeAt(0).toString(16)}${liveGroup.slice(1)}"}`)],
      ["two annotations objects", `{"annotations":{"io.containerd.runc.v2.group":"${liveGroup}"},"x":{"annotations":{}}}`],
      ["a group that is a path", specWith(`{"io.containerd.runc.v2.group":"../${liveGroup}"}`)],
      [
        "an address that filepath.Join would clean",
        specWith(`{"io.containerd.runc.v2.group":"${liveGroup}"}`),
        { address: "/run/containerd//containerd.sock" },
      ],
    ];
    // A live group is answered, unless its key is given twice (Go's decoder would keep the last one).
    const live = launch(bundle("t0", specWith(`{"io.containerd.runc.v2.group":"${liveGroup}"}`)), env.namespace, "t0", "start", { path: fakePath });
    assert.equal(live.status, 0, live.text + live.stderr);
    cases.push(["the group key twice", specWith(`{"io.containerd.runc.v2.group":"${liveGroup}","io.containerd.runc.v2.group":"other"}`)]);
    for (const [what, config, opts] of cases) {
      const dir = bundle("t1", config);
      const r = launch(dir, env.namespace, "t1", "start", { path: fakePath, ...opts });
      assert.equal(r.status, 3, `${what}: ${r.text} ${r.stderr}`);
      assert.equal(r.text.trim(), `REAL ${r.args.join(" ")}`, what);
      assert.ok(!existsSync(join(dir, "address")), what);
    }
  });

  it("answers delete for a container runc no longer has, as the real shim would, and unmounts its rootfs", () => {
    const dir = bundle("gone1");
    writeFileSync(join(dir, "runtime"), "");
    writeFileSync(join(dir, "options.json"), "{}");
    writeFileSync(join(dir, "init.pid"), "4321");
    for (let i = 0; i < 2; i++) assert.equal(spawnSync("mount", ["-t", "tmpfs", "tmpfs", join(dir, "rootfs")]).status, 0);
    const before = Date.now() / 1000;
    const r = launch(dir, env.namespace, "gone1", "delete", { path: fakePath });
    assert.equal(r.status, 0, r.text + r.stderr);
    assert.equal(r.stderr, "");
    const msg = decodeMessage(r.stdout);
    assert.equal(msg.get(1), 4321n, "pid");
    assert.equal(msg.get(2), 137n, "exit status");
    const at = decodeMessage(msg.get(3) as Buffer);
    const seconds = Number(at.get(1));
    assert.ok(seconds >= Math.floor(before) && seconds <= Date.now() / 1000 + 1, `exited_at ${seconds}`);
    assert.deepEqual(mountsUnder(dir), [], "both rootfs mounts are gone");
  });

  it("hands delete to the real shim when runc may still have the container or the options are not the defaults", () => {
    const made = (id: string, files: Record<string, string>) => {
      const dir = bundle(id);
      for (const [f, content] of Object.entries(files)) writeFileSync(join(dir, f), content);
      return dir;
    };
    const defaults = { runtime: "", "options.json": "{}" };
    // As runc leaves it for a container it still has: a directory named by the id under its root.
    const runcRoot = `/run/containerd/runc/${env.namespace}`;
    const madeRoot = !existsSync(runcRoot);
    const runcState = `${runcRoot}/live1`;
    mkdirSync(runcState, { recursive: true });
    try {
      const cases: [string, string, string][] = [
        ["runc has state for it", made("live1", defaults), "live1"],
        ["another runc binary", made("t2", { ...defaults, runtime: "/usr/local/bin/crun" }), "t2"],
        ["options beyond the defaults", made("t3", { ...defaults, "options.json": '{"root":"/x"}' }), "t3"],
        ["no runtime file", made("t4", { "options.json": "{}" }), "t4"],
        ["options too long to read at a glance", made("t6", { ...defaults, "options.json": `{${" ".repeat(300)}}` }), "t6"],
        ["a working directory that is not the bundle", made("t5", defaults), "other"],
      ];
      for (const [what, dir, id] of cases) {
        const r = launch(dir, env.namespace, id, "delete", { path: fakePath });
        assert.equal(r.status, 3, `${what}: ${r.text} ${r.stderr}`);
        assert.equal(r.text.trim(), `REAL ${r.args.join(" ")}`, what);
      }
    } finally {
      rmSync(runcState, { recursive: true, force: true });
      if (madeRoot) rmdirSync(runcRoot);
    }
  });

  it("passes every other call through, and finds the real shim beside containerd when PATH has none", () => {
    const dir = bundle("t7");
    const empty = join(scratch, "empty-bin");
    mkdirSync(empty, { recursive: true });
    const r = launch(dir, env.namespace, "t7", "state", { path: fakePath });
    assert.equal(r.status, 3);
    assert.equal(r.text.trim(), `REAL ${r.args.join(" ")}`);
    const beside = launch(dir, env.namespace, "t7", "state", { path: empty, publish: join(fakePath, "containerd") });
    assert.equal(beside.status, 3, beside.stderr);
    assert.equal(beside.text.trim(), `REAL ${beside.args.join(" ")}`);
    const nowhere = launch(dir, env.namespace, "t7", "state", { path: empty, publish: join(empty, "containerd") });
    assert.equal(nowhere.status, 127);
    assert.match(nowhere.stderr, /cannot run containerd-shim-runc-v2/);
  });
});

describe("runs through the shim launcher", { skip: launcher ? false : "build/ctrexec-shim is not built" }, () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("launcher-runs");
  });
  after(async () => {
    await env.dispose();
  });

  /** Which runtime binary containerd ran for a run's task (it keeps it in the bundle for a restart). */
  async function runtimeOfRun(ex: ContainerdExecutor): Promise<{ binary: string; shim: number }> {
    let seen = { binary: "", shim: 0 };
    await ex.run({
      root: { source: bindMountable(env.rootfs) },
      process: { meta: { args: ["sleep", "0.2"] } },
      onStarted: ({ id, pid }) => {
        seen = { binary: readFileSync(join(bundleOf(ex.client.namespace, id), "shim-binary-path"), "utf8"), shim: parentPid(pid) };
      },
    });
    return seen;
  }

  it("goes through the launcher by default, reuses shims through it, and leaves nothing behind", async () => {
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await runtimeOfRun(env.executor));
    for (const r of runs) assert.equal(r.binary, launcher);
    // Sequential runs share a reused shim: the launcher's start found it.
    assert.ok(new Set(runs.map((r) => r.shim)).size < runs.length, `shims ${runs.map((r) => r.shim).join(", ")}`);
    const failed = await env.executor
      .run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sh", "-c", "exit 7"] } } })
      .catch((e: unknown) => e);
    assert.equal((failed as { exitCode?: number }).exitCode, 7);
    await env.assertClean();
  });

  // The launcher's module is inlined in the CLI bundle, one directory level above where it is compiled to.
  it("is found by the CLI bundle as by the library", () => {
    const cli = fileURLToPath(new URL("../../src/cli/ctrexec.mjs", import.meta.url));
    const env0 = { ...process.env };
    delete env0["CTREXEC_SHIM_LAUNCHER"];
    const r = spawnSync(process.execPath, [cli, "--namespace", env.namespace, "info", "--format", "json"], { encoding: "utf8", env: env0 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { runtime: { shimLauncher: string | null } }).runtime.shimLauncher, launcher);
  });

  it("can be turned off, and then containerd runs its own shim binary", async () => {
    const ex = await ContainerdExecutor.create({
      namespace: env.namespace,
      root: env.stateDir,
      fifoRoot: env.fifoRoot,
      defaultNetwork: "host",
      shimLauncher: false,
    });
    try {
      const r = await runtimeOfRun(ex);
      assert.notEqual(r.binary, launcher);
      assert.match(r.binary, /containerd-shim-runc-v2$/);
    } finally {
      await ex.close();
    }
    await env.assertClean();
  });

  /**
   * Runs `body` with an executor whose launcher is a copy of the built one in a directory of its own, and the
   * warnings it logged; the executor is closed and the copy removed after.
   */
  async function withLauncherCopy(body: (t: { ex: ContainerdExecutor; dir: string; copy: string; warnings: string[] }) => Promise<void>) {
    const dir = mkdtempSync(join(tmpdir(), "ctrexec-launcher-copy-"));
    const copy = join(dir, "ctrexec-shim");
    copyFileSync(launcher!, copy);
    chmodSync(copy, 0o755);
    const warnings: string[] = [];
    const logger: Logger = { debug() {}, info() {}, warn: (m: string) => void warnings.push(m), error() {} };
    const ex = await ContainerdExecutor.create({
      namespace: env.namespace,
      root: env.stateDir,
      fifoRoot: env.fifoRoot,
      defaultNetwork: "host",
      shimLauncher: copy,
      logger,
    });
    try {
      await body({ ex, dir, copy, warnings });
    } finally {
      await ex.close();
      rmSync(dir, { recursive: true, force: true });
    }
    await env.assertClean();
  }

  it("goes on without a launcher containerd cannot run, and says so once", () =>
    withLauncherCopy(async ({ ex, dir, copy, warnings }) => {
      assert.equal((await runtimeOfRun(ex)).binary, copy);
      await ex.settled();
      // As containerd would see it from another mount namespace: the path is not there.
      rmSync(dir, { recursive: true, force: true });
      for (let i = 0; i < 2; i++) assert.match((await runtimeOfRun(ex)).binary, /containerd-shim-runc-v2$/);
      assert.equal(warnings.filter((w) => w.includes("cannot run the shim launcher")).length, 1, warnings.join("\n"));
    }));

  it("goes on without a launcher containerd finds but may not execute (a noexec mount, lost x bits)", () =>
    withLauncherCopy(async ({ ex, copy, warnings }) => {
      chmodSync(copy, 0o644);
      assert.match((await runtimeOfRun(ex)).binary, /containerd-shim-runc-v2$/);
      assert.equal(warnings.filter((w) => w.includes("cannot run the shim launcher") && w.includes("fork/exec")).length, 1, warnings.join("\n"));
    }));

  it("rejects a launcher that is not an absolute executable path, or one with another runtime, before anything runs", async () => {
    const plain = join(env.stateDir, "not-executable");
    writeFileSync(plain, "#!/bin/sh\n", { mode: 0o644 });
    for (const [shimLauncher, runtime] of [
      ["build/ctrexec-shim", undefined],
      [plain, undefined],
      [env.stateDir, undefined],
      [launcher!, "io.containerd.runsc.v1"],
    ] as const) {
      await assert.rejects(
        ContainerdExecutor.create({
          namespace: env.namespace,
          root: env.stateDir,
          fifoRoot: env.fifoRoot,
          shimLauncher,
          ...(runtime ? { runtime } : {}),
        }),
        (e: unknown) => e instanceof InvalidArgumentError && (e as InvalidArgumentError).field === "shimLauncher",
      );
    }
  });
});
