/**
 * Rootless mode (issue #22) beside other tools and under a supervisor's signals, as a throwaway user
 * (test/helpers/rootless.ts): contracts a second adversarial review found broken; each fails on the code before
 * its fix.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { showResult as show, useRootlessUser, waitFor } from "../helpers/rootless.js";

const isRoot = process.getuid?.() === 0;

function argvOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return [];
  }
}

/** Pids of live processes of `uid` whose argv[0] ends with `name`. */
function byArgv0(uid: number, name: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const status = readFileSync(`/proc/${e}/status`, "utf8");
      if (!new RegExp(`^Uid:\\s+${uid}\\s`, "m").test(status) || /^State:\s+Z/m.test(status)) continue;
    } catch {
      continue;
    }
    if (argvOf(Number(e))[0]?.endsWith(name)) out.push(Number(e));
  }
  return out;
}

describe("rootless: other tools' daemons, signals to the CLI's process group", {
  skip: isRoot ? false : "needs root: it creates a user",
}, () => {
  const { u, ctrexec, cli, vars } = useRootlessUser();

  it("`rootless stop` leaves alone a rootlesskit that rootless nerdctl started (same --state-dir)", async () => {
    // containerd-rootless.sh's own command line (its daemon is replaced by a sleep).
    const kitArgs = [
      "rootlesskit",
      `--state-dir=${join(u().runtimeDir, "containerd-rootless")}`,
      "--net=host",
      "--copy-up=/etc",
      "--copy-up=/run",
      "--copy-up=/var/lib",
      "--propagation=rslave",
      "sleep",
      "120",
    ];
    const kit = spawn("runuser", ["-u", u().name, "--", "setsid", "env", "-i", ...vars(), ...kitArgs], { stdio: "ignore" });
    kit.unref();
    assert.ok(await waitFor(() => byArgv0(u().uid, "rootlesskit").length === 1, 20_000), "rootlesskit did not start");
    const [pid] = byArgv0(u().uid, "rootlesskit");
    try {
      const stop = await ctrexec(["rootless", "stop"]);
      assert.equal(stop.code, 0, show(stop));
      assert.ok(existsPid(pid!), `ctrexec rootless stop killed another tool's rootlesskit (pid ${pid}):\n${show(stop)}`);
    } finally {
      if (existsPid(pid!)) process.kill(pid!, "SIGKILL");
      // Without --pidns its child (the sleep) outlives it: dispose kills whatever of the user is left.
    }
  });

  it("two SIGINTs to the CLI's process group (a CI runner's cancel, `timeout -s INT`) are two interrupts, not a kill", async () => {
    const start = await ctrexec(["rootless", "start", "--network", "host"]);
    assert.equal(start.code, 0, show(start));
    // Prints "ready" once its trap is set, and runs on for a while after.
    const script = 'trap "echo got-INT" INT; echo ready; i=0; while [ $i -lt 60 ]; do sleep 0.1; i=$((i+1)); done; echo finished';
    // setsid: the CLI, and whatever it starts, in a process group of their own, as a runner starts a step.
    const c = spawn(
      "runuser",
      ["-u", u().name, "--", "setsid", "-w", "env", "-i", ...vars(), process.execPath, cli(), "run", "--", "sh", "-c", script],
      {
        cwd: u().scratch,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    let err = "";
    c.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
    c.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
    const exited = new Promise<number | null>((r) => c.once("close", (code) => r(code)));
    const interrupts = () => out.split("\n").filter((l) => l === "got-INT").length;
    // The container's trap is set once "ready" is out: the CLI passes signals on from before that.
    assert.ok(await waitFor(() => out.includes("ready"), 30_000), `the run never started:\n${out}\n${err}`);
    // The stand-in, or ctrexec inside: the process group is setsid's either way.
    const pid = byArgv0(u().uid, process.execPath).find((p) => argvOf(p).includes("run"));
    assert.ok(pid, "no CLI process");
    const pgid = Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[2]);
    process.kill(-pgid, "SIGINT");
    assert.ok(await waitFor(() => interrupts() >= 1, 10_000), `the first SIGINT never arrived:\n${out}\n${err}`);
    process.kill(-pgid, "SIGINT");
    const code = await exited;
    // README: "a third SIGINT kills the container"; two are passed on, once each, and this command survives them.
    assert.doesNotMatch(err, /third interrupt/, `two SIGINTs to the group killed the container:\n${err}`);
    assert.equal(interrupts(), 2, `each SIGINT once:\n${out}`);
    assert.match(out, /finished/);
    assert.equal(code, 0, `exit ${code}\n${out}\n${err}`);
  });
});

function existsPid(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}
