/**
 * Issue 22: the rootless pass. As root, this file makes a throwaway user (test/helpers/rootless.ts), starts its
 * rootless containerd with `ctrexec rootless start`, runs the executor's behaviour tests of test/rootless/ as that
 * user inside rootlesskit's namespaces (`ctrexec rootless enter -- node --test ...`: the library finds the daemon
 * itself there), checks the CLI from outside (its re-exec into the namespaces), stops the daemon and removes the
 * user, asserting that nothing of it is left.
 *
 * The executor behaviour tests that cannot apply rootless, and why:
 * - bridge networks (network.test.ts, the bridge parts of cli-e2e): CNI needs root in the host's network
 *   namespace; rootless refuses "bridge" with FailedPreconditionError (checked here) and uses rootlesskit's
 *   network as "host".
 * - resource limits, OOM kills, CPU/memory usage, cgroupParent (executor.test.ts "resources"): cgroup v1 cannot
 *   delegate limits to an unprivileged user; rootless refuses them with FailedPreconditionError (checked here) and
 *   a rootless run has no cgroup of its own to read usage from.
 * - a user namespace per run, explicit maps, the host-wide range pool (userns.test.ts): rootless already runs
 *   every container in rootlesskit's user namespace, and idmapped mounts cannot be made inside it; refused with
 *   InvalidArgumentError (checked here).
 * - host-wide safety checks that need root (host-safety.test.ts, prune-safety.test.ts, crash.test.ts,
 *   reliability.test.ts): they kill or restart the system containerd, kill shims by pid, or look at host paths
 *   (/run/containerd, /var/lib/ctrexec) a rootless user cannot reach; their rootless equivalent is that stopping
 *   the daemon (rootlesskit --pidns) ends every shim and container, checked here.
 * - the shim launcher and shim sharing internals (shim-launcher, shim-pool, shim-reuse): they count and kill
 *   host shims and compare with the root daemon's runtime dirs; the rootless runs here use the same defaults.
 * - a root whose overlay options exceed a page "via the host", mounts made on the host after the daemon started:
 *   host mounts do not propagate into rootlesskit's mount namespace (isolation probe, caveat 2).
 * - ctr's view of images (pull.test.ts compares with `ctr run`): ctr is not part of the rootless set-up.
 * - hosts/resolv.conf and DNS of a bridge network, and network.test.ts's port checks: bridge only.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { writeRunnableLayout } from "../helpers/oci-image.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { createRootlessUser, entriesOf, fileFacts, type RootlessUser, showResult as show, waitFor } from "../helpers/rootless.js";

const execFileP = promisify(execFile);
const isRoot = process.getuid?.() === 0;
/** Bounds on whole commands of the user (they fail with the output so far past them, never hang the suite). */
const DAEMON_MS = 60_000;
const INNER_SUITE_MS = 150_000;
const CLI_MS = 60_000;

describe("rootless pass: a throwaway user and its rootless containerd", { skip: isRoot ? false : "needs root: it creates a user" }, () => {
  let user: RootlessUser | undefined;
  let registry: TestRegistry | undefined;
  let hostile = "";
  let hostileBefore: Awaited<ReturnType<typeof fileFacts>>;
  let image = { ref: "", marker: "" };
  let started = false;

  const u = () => {
    assert.ok(user, "no test user (set-up failed)");
    return user;
  };
  const ctrexec = async (args: string[], timeoutMs = CLI_MS) => u().ctrexec(args, { timeoutMs });

  before(async () => {
    user = await createRootlessUser();
    // A root-owned dir and file for the hostile check, bound read-write into a container by the inner test.
    hostile = join(user.base, "hostile");
    await mkdir(hostile, { mode: 0o755 });
    await chmod(hostile, 0o755);
    await writeFile(join(hostile, "secret"), "host root's file\n", { mode: 0o644 });
    hostileBefore = await fileFacts(join(hostile, "secret"));
    // An image in a registry on the host's loopback: rootlesskit --net=host reaches it as it is.
    registry = await startRegistry();
    const layout = join(registry.dir, "layout");
    const marker = `rootless-${user.name}`;
    await writeRunnableLayout(layout, { tag: "v1", marker });
    await registry.push(`${layout}:v1`, "rootless/busybox:v1");
    image = { ref: `${registry.host}/rootless/busybox:v1`, marker };
    // Network host whatever /dev/net/tun allows: the inner network test compares "host" with the host's own
    // interfaces (with slirp4netns, "host" would be rootlesskit's namespace, and 127.0.0.1 not the registry's).
    const start = await ctrexec(["rootless", "--network", "host", "start"], DAEMON_MS);
    assert.equal(start.code, 0, `ctrexec rootless start failed:\n${show(start)}`);
    started = true;
  });

  after(async () => {
    try {
      if (started && user) {
        const stop = await ctrexec(["rootless", "stop"], DAEMON_MS);
        assert.equal(stop.code, 0, show(stop));
      }
    } finally {
      await registry?.stop();
      await user?.dispose();
    }
  });

  it("passes the executor's behaviour tests as the user, inside the namespaces", async () => {
    const files = (await readdir(join(u().app, "dist/test/rootless")))
      .filter((f) => f.endsWith(".test.js"))
      .sort()
      .map((f) => join(u().app, "dist/test/rootless", f));
    assert.ok(files.length >= 4, `inner test files: ${files.join(", ")}`);
    const hostInterfaces = (await readdir("/sys/class/net")).join(",");
    const r = await u().ctrexec(["rootless", "enter", "--", process.execPath, "--test", "--test-reporter=spec", "--test-timeout=120000", ...files], {
      timeoutMs: INNER_SUITE_MS,
      cwd: u().scratch,
      env: {
        CTREXEC_TEST_HOSTILE_DIR: hostile,
        CTREXEC_TEST_IMAGE: image.ref,
        CTREXEC_TEST_IMAGE_MARKER: image.marker,
        CTREXEC_TEST_HOST_INTERFACES: hostInterfaces,
      },
    });
    const count = (what: string) => Number(new RegExp(`^ℹ ${what} (\\d+)$`, "m").exec(r.stdout)?.[1] ?? -1);
    assert.equal(r.code, 0, `the inner rootless tests failed:\n${show(r)}`);
    // Every inner test ran and passed (none skipped or cancelled).
    assert.ok(count("tests") >= 17 && count("pass") === count("tests"), show(r));
  });

  it("left the host root's file alone: content, mode and owner, and nothing new beside it", async () => {
    assert.deepEqual(await fileFacts(join(hostile, "secret")), hostileBefore);
    assert.deepEqual(await entriesOf(hostile), ["secret"]);
  });

  it("runs the user's plain CLI from outside: run (re-executed inside), info, ps", async () => {
    const run = await ctrexec(["run", "--rm", "--network", "host", "--", "id", "-u"]);
    assert.equal(run.code, 0, show(run));
    assert.equal(run.stdout, "0\n");
    const info = await ctrexec(["info"]);
    assert.equal(info.code, 0, show(info));
    assert.match(info.stdout, /^rootless:\s+yes/m, show(info));
    const ps = await ctrexec(["ps"]);
    assert.equal(ps.code, 0, show(ps));
    assert.equal(ps.stdout.trim().split("\n").length, 1, `ctrexec ps lists runs after run --rm:\n${show(ps)}`);
    // The library outside the namespaces (no enter) refuses, and says how to get in.
    const index = pathToFileURL(join(u().app, "dist/src/index.js")).href;
    const script = `import { ContainerdExecutor } from ${JSON.stringify(index)};
      await ContainerdExecutor.create().then((e) => { console.log("created"); return e.close(); }, (e) => console.log(e.name + ": " + e.message));`;
    const lib = await u().run([process.execPath, "--input-type=module", "-e", script], { timeoutMs: CLI_MS });
    assert.match(lib.stdout, /^FailedPreconditionError: .*ctrexec rootless enter/, show(lib));
    const status = await ctrexec(["rootless", "status"]);
    assert.equal(status.code, 0, show(status));
    assert.match(status.stdout, /running/);
  });

  it("runs exec, kill, prune and an image run of the user's plain CLI from outside", async () => {
    const id = `rl-cli-${process.pid}`;
    const run = u().ctrexec(["run", "--id", id, "--", "sleep", "60"], { timeoutMs: CLI_MS });
    const listed = await waitFor(async () => {
      const ps = await ctrexec(["ps", "--format", "json"]);
      return ps.code === 0 && ps.stdout.includes(`"${id}"`);
    }, 20_000);
    try {
      assert.ok(listed, `ctrexec ps never listed ${id}`);
      const exec = await ctrexec(["exec", id, "--", "sh", "-c", "id -u; cat /proc/1/cmdline | tr '\\0' ' '"]);
      assert.equal(exec.code, 0, show(exec));
      assert.equal(exec.stdout, "0\nsleep 60 ");
    } finally {
      const kill = await ctrexec(["kill", id]);
      assert.equal(kill.code, 0, show(kill));
    }
    const ended = await run;
    assert.equal(ended.code, 137, show(ended));
    const prune = await ctrexec(["prune"]);
    assert.equal(prune.code, 0, show(prune));
    const fromImage = await ctrexec(["run", "--rm", "--image", image.ref, "-q", "--", "cat", "/layer.txt"]);
    assert.equal(fromImage.code, 0, show(fromImage));
    assert.equal(fromImage.stdout, `${image.marker}\n`);
    const ps = await ctrexec(["ps", "--format", "json"]);
    assert.equal(ps.code, 0, show(ps));
    assert.deepEqual(JSON.parse(ps.stdout), [], "runs left in the CLI's namespace");
  });

  it("a run whose CLI was SIGKILLed, then the daemon stopped: the next daemon's prune removes what it left", async () => {
    const id = `rl-crash-${process.pid}`;
    const run = u().ctrexec(["run", "--id", id, "--", "sleep", "300"], { timeoutMs: CLI_MS });
    const listed = await waitFor(async () => {
      const ps = await ctrexec(["ps", "--format", "json"]);
      return ps.code === 0 && ps.stdout.includes(`"${id}"`);
    }, 20_000);
    assert.ok(listed, `ctrexec ps never listed ${id}`);
    // The CLI outside, nsenter and the CLI it re-executed inside: all die with no chance to clean up.
    const cli = u()
      .processes()
      .filter((pid) => {
        try {
          const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
          return argv.some((a) => a.endsWith("ctrexec.mjs")) && argv.includes(id);
        } catch {
          return false;
        }
      });
    assert.equal(cli.length, 3, `the CLI standing in, nsenter and the CLI inside: ${cli.join(", ")}`);
    for (const pid of cli) process.kill(pid, "SIGKILL");
    await run;
    const runDir = join(u().home, ".local/share/ctrexec/runs/ctrexec", id);
    assert.ok(existsSync(runDir), "the killed run left its run dir");

    // Its container and shim end with the daemon; its record and run dir outlive it.
    const stop = await ctrexec(["rootless", "stop"], DAEMON_MS);
    assert.equal(stop.code, 0, show(stop));
    const start = await ctrexec(["rootless", "--network", "host", "start"], DAEMON_MS);
    assert.equal(start.code, 0, show(start));
    const left = await ctrexec(["ps", "--format", "json"]);
    assert.deepEqual(
      (JSON.parse(left.stdout) as { id: string }[]).map((r) => r.id),
      [id],
      show(left),
    );
    const prune = await ctrexec(["prune"]);
    assert.equal(prune.code, 0, show(prune));
    assert.match(prune.stdout, new RegExp(`removed container ${id}`));
    const ps = await ctrexec(["ps", "--format", "json"]);
    assert.deepEqual(JSON.parse(ps.stdout), [], show(ps));
    assert.ok(!existsSync(runDir), `prune left ${runDir}`);
  });

  it("stops the daemon: no process of the user is left, status says stopped", async () => {
    const stop = await ctrexec(["rootless", "stop"], DAEMON_MS);
    assert.equal(stop.code, 0, show(stop));
    started = false;
    // The daemon's end is immediate for its own processes; the bound covers the kernel reaping them.
    const gone = await waitFor(() => u().processes().length === 0, 5000);
    const { stdout: ps } = await execFileP("ps", ["-o", "pid,user,args", "-u", String(u().uid)]).catch((e: { stdout: string }) => e);
    assert.ok(gone, `processes of ${u().name} after stop: ${u().processes().join(", ")}\n${ps}`);
    const status = await ctrexec(["rootless", "status"]);
    assert.equal(status.code, 3, show(status));
    assert.match(status.stdout, /stopped/);
  });
});
