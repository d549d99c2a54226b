import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createTestEnv, type TestEnv } from "../helpers/env.js";

const bin = fileURLToPath(new URL("../../src/cli/ctrexec.mjs", import.meta.url));
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("ctrexec CLI end to end (real binary, real containerd)", () => {
  let env: TestEnv;
  let hostDir: string;
  before(async () => {
    env = await createTestEnv("cli");
    hostDir = await mkdtemp(join(tmpdir(), "ctrexec-cli-host-"));
  });
  afterEach(async () => {
    await env.assertNoLeaks();
  });
  after(async () => {
    await rm(hostDir, { recursive: true, force: true });
    await env.dispose();
  });

  const globals = () => ["--namespace", env.namespace, "--root", env.stateDir];
  const childEnv = () => ({ ...process.env, CTREXEC_FIFO_ROOT: env.fifoRoot, CONTAINERD_NAMESPACE: "" });

  /** Runs `ctrexec ARGS` to completion. `run` gets --rootfs of the test env inserted. */
  function ctrexec(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = execFile(process.execPath, [bin, ...globals(), ...args], { env: childEnv() }, (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
      child.stdin!.end(input ?? "");
    });
  }
  // The host network: CLI behaviour is tested here, bridge networking (without masquerade) in network.test.ts.
  const run = (args: string[], input?: string) => ctrexec(["run", "--rootfs", env.rootfs, "--network", "host", ...args], input);

  function start(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }> } {
    const child = spawn(process.execPath, [bin, ...globals(), "run", "--rootfs", env.rootfs, "--network", "host", ...args], {
      env: childEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.resume();
    const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }>((resolve) =>
      child.on("exit", (code, signal) => resolve({ code, signal, stdout })),
    );
    return { child, done };
  }
  async function waitRunning(id: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const r = await ctrexec(["ps", "--format", "json"]);
      const runs = JSON.parse(r.stdout || "[]") as { id: string; status: string }[];
      if (runs.some((x) => x.id === id && x.status === "running")) return;
      await delay(100);
    }
    assert.fail(`run ${id} never showed up as running`);
  }

  it("passes exit codes through; 125, 126 and 127 for its own failures", async () => {
    assert.equal((await run(["sh", "-c", "exit 3"])).code, 3);
    const bad = await run(["--memory", "lots", "true"]);
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /^ctrexec: invalid argument "lots" for "--memory"/);
    assert.equal((await run(["/etc"])).code, 126);
    const nf = await run(["no-such-command"]);
    assert.equal(nf.code, 127);
    assert.match(nf.stderr, /no-such-command/);
  });

  it("keeps stdout and stderr apart and pipes stdin with -i", async () => {
    const r = await run(["sh", "-c", "echo out; echo err >&2"]);
    assert.deepEqual([r.stdout, r.stderr], ["out\n", "err\n"]);
    assert.equal((await run(["-i", "cat"], "hi\n")).stdout, "hi\n");
    assert.equal((await run(["cat"], "not passed without -i\n")).stdout, "");
  });

  it("sets env from -e, bare -e and --env-file", async () => {
    const file = join(hostDir, "env");
    await writeFile(file, "# comment\nFROM_FILE=f\n");
    const r = await ctrexec([
      "run",
      "--rootfs",
      env.rootfs,
      "--network",
      "none",
      "-e",
      "A=1",
      "-e",
      "PATH",
      "--env-file",
      file,
      "sh",
      "-c",
      "echo $A $FROM_FILE $PATH",
    ]);
    assert.equal(r.stdout, `1 f ${process.env["PATH"]}\n`);
  });

  it("creates -w owned by the -u user, and resolves -u forms", async () => {
    assert.equal((await run(["-u", "daemon", "-w", "/cli/work", "pwd"])).stdout, "/cli/work\n");
    const st = await stat(join(env.rootfs, "cli/work"));
    assert.deepEqual([st.uid, st.gid], [1, 1]);
    assert.equal((await run(["-u", "1:1", "id", "-u"])).stdout, "1\n");
    assert.equal((await run(["-u", "user:daemon", "id", "-g"])).stdout, "1\n");
    const bad = await run(["-u", "nosuch", "true"]);
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /unable to find user nosuch/);
  });

  it("honours --read-only, bind mounts (rw and ro) and a sized tmpfs", async () => {
    assert.notEqual((await run(["--read-only", "touch", "/x"])).code, 0);
    assert.equal((await run(["-v", `${hostDir}:/host`, "sh", "-c", "echo w > /host/written"])).code, 0);
    assert.equal(await readFile(join(hostDir, "written"), "utf8"), "w\n");
    assert.notEqual((await run(["--mount", `type=bind,source=${hostDir},target=/host,readonly`, "touch", "/host/no"])).code, 0);
    const t = await run(["--tmpfs", "/scratch:size=2m", "grep", " /scratch ", "/proc/mounts"]);
    assert.match(t.stdout, /size=2048k/);
  });

  it("sets the hostname and extra hosts", async () => {
    const r = await run(["-h", "clibox", "--add-host", "db:10.1.2.3", "sh", "-c", "hostname; grep db /etc/hosts"]);
    assert.equal(r.stdout, "clibox\n10.1.2.3\tdb\n");
  });

  it("execs from a second process, lists runs with ps, and kill gives 137", async () => {
    const id = env.uniqueId("clikill");
    const bg = start(["--id", id, "sleep", "30"]);
    await waitRunning(id);
    const ex = await ctrexec(["exec", "-u", "daemon", id, "sh", "-c", "id -un; echo $0"]);
    assert.equal(ex.stdout, "daemon\nsh\n");
    assert.equal((await ctrexec(["exec", id, "sh", "-c", "exit 9"])).code, 9);
    const ps = JSON.parse((await ctrexec(["ps", "--format", "json"])).stdout) as { id: string; pid: number; command: string[] }[];
    const me = ps.find((r) => r.id === id)!;
    assert.ok(me.pid > 0);
    assert.deepEqual(me.command, ["sleep", "30"]);
    assert.match((await ctrexec(["ps"])).stdout, new RegExp(`^${id}\\s+\\d+\\s+running`, "m"));
    assert.equal((await ctrexec(["kill", id])).stdout, `${id}\n`);
    assert.equal((await bg.done).code, 137);
    assert.equal((await ctrexec(["kill", "nosuchrun"])).code, 125);
  });

  it("forwards SIGTERM to the process (trap in sh)", async () => {
    const id = env.uniqueId("clisig");
    const bg = start(["--id", id, "sh", "-c", 'trap "echo got TERM; exit 42" TERM; while true; do sleep 0.1; done']);
    await waitRunning(id);
    bg.child.kill("SIGTERM");
    const r = await bg.done;
    assert.equal(r.code, 42);
    assert.equal(r.stdout, "got TERM\n");
  });

  it("prune removes what a SIGKILLed ctrexec left, and nothing of live runs", async () => {
    const live = env.uniqueId("clilive");
    const liveRun = start(["--id", live, "sleep", "30"]);
    const dead = env.uniqueId("clidead");
    const deadRun = start(["--id", dead, "-i", "sleep", "60"]);
    await waitRunning(live);
    await waitRunning(dead);
    deadRun.child.kill("SIGKILL");
    await deadRun.done;
    const pr = await ctrexec(["prune"]);
    assert.equal(pr.code, 0, pr.stderr);
    assert.match(pr.stdout, new RegExp(`removed container ${dead}`));
    assert.doesNotMatch(pr.stdout, new RegExp(live));
    const ids = (await env.client.containers.list()).map((c) => c.id);
    assert.deepEqual(ids, [live]);
    assert.equal((await ctrexec(["prune"])).stdout, "nothing to remove\n");
    await ctrexec(["kill", live]);
    assert.equal((await liveRun.done).code, 137);
  });

  it("runs a TTY under a real terminal: prompt, size, resize, and the terminal restored", async () => {
    const sock = `ctrexec-test-${process.pid}`;
    const tmux = (...args: string[]) =>
      new Promise<string>((resolve, reject) => execFile("tmux", ["-L", sock, ...args], (err, stdout) => (err ? reject(err) : resolve(stdout))));
    const before = join(hostDir, "stty-before");
    const afterFile = join(hostDir, "stty-after");
    const cmd = [process.execPath, bin, ...globals(), "run", "-t", "-i", "--network", "none", "--rootfs", env.rootfs, "sh"]
      .map((a) => `'${a}'`)
      .join(" ");
    const script = `stty -g > ${before}; CTREXEC_FIFO_ROOT=${env.fifoRoot} ${cmd}; echo EXITED:$?; stty -g > ${afterFile}; sleep 60`;
    await tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "sh", "-c", script);
    const screen = () => tmux("capture-pane", "-p", "-t", "t");
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 100; i++) {
        const s = await screen();
        if (re.test(s)) return s;
        await delay(100);
      }
      assert.fail(`screen never matched ${re}:\n${await screen()}`);
    };
    try {
      await waitFor(/^\/ #\s*$/m);
      await tmux("send-keys", "-t", "t", "stty size", "Enter");
      await waitFor(/^30 100$/m);
      await tmux("resize-window", "-t", "t", "-x", "120", "-y", "40");
      await delay(300);
      await tmux("send-keys", "-t", "t", "clear; stty size", "Enter");
      await waitFor(/^40 120$/m);
      await tmux("send-keys", "-t", "t", "exit 5", "Enter");
      await waitFor(/EXITED:5/);
      for (let i = 0; i < 50 && !(await stat(afterFile).catch(() => null)); i++) await delay(100);
      assert.equal(await readFile(afterFile, "utf8"), await readFile(before, "utf8"), "the terminal was not restored");
    } finally {
      await tmux("kill-server").catch(() => {});
    }
  });
});
