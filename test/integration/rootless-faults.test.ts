/**
 * Rootless mode (issue #22) interrupted and misused, as a throwaway user (test/helpers/rootless.ts) with its own
 * rootless containerd: each test is a contract an adversarial review found broken (and that fails on the code
 * before its fix).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { showResult as show, useRootlessUser, waitFor } from "../helpers/rootless.js";

const isRoot = process.getuid?.() === 0;

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

function childrenOf(pid: number): number[] {
  try {
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
    return text ? text.split(/\s+/).map(Number) : [];
  } catch {
    return [];
  }
}

describe("rootless faults: interrupted starts, reused namespaces, terminals, sockets", {
  skip: isRoot ? false : "needs root: it creates a user",
}, () => {
  const { u, ctrexec, cli, vars } = useRootlessUser();
  const runIds = async () => {
    const ps = await ctrexec(["ps"]);
    assert.equal(ps.code, 0, show(ps));
    return ps.stdout
      .split("\n")
      .slice(1)
      .map((l) => l.split(/\s+/)[0])
      .filter((id): id is string => !!id);
  };

  it("a start interrupted (^C) while it waits leaves nothing that stop cannot stop", async () => {
    const runuser = spawn(
      "runuser",
      ["-u", u().name, "--", "env", "-i", ...vars(), process.execPath, cli(), "rootless", "--network", "host", "start"],
      {
        cwd: u().scratch,
        stdio: "ignore",
      },
    );
    const exited = new Promise((r) => runuser.once("exit", r));
    // Once rootlesskit runs, and before containerd answers, the user presses ^C.
    const kit = await waitFor(
      () =>
        u()
          .processes()
          .some((p) => comm(p) === "rootlesskit"),
      10_000,
    );
    assert.ok(kit, "rootlesskit never started");
    const node = childrenOf(runuser.pid!).find((p) => comm(p) === "node");
    assert.ok(node, "the start's node process");
    process.kill(node, "SIGINT");
    await exited;
    const stop = await ctrexec(["rootless", "stop"]);
    assert.equal(stop.code, 0, show(stop));
    const gone = await waitFor(() => u().processes().length === 0, 5_000);
    const left = u()
      .processes()
      .map((p) => `${p} ${comm(p)}`);
    // The next tests need a clean start: what is left is the test user's, killed by pid.
    for (const p of u().processes()) process.kill(p, "SIGKILL");
    await waitFor(() => u().processes().length === 0, 5_000);
    assert.ok(gone, `processes of the user after an interrupted start and a stop: ${left.join(", ")}`);
  });

  it("a start after that works (no 'containerd that ctrexec did not start')", async () => {
    const start = await ctrexec(["rootless", "--network", "host", "start"]);
    assert.equal(start.code, 0, show(start));
  });

  it("a prune in a nested pid namespace inside leaves the live runs of this daemon alone", async () => {
    // A stop of an earlier daemon whose pid namespace had the inode this one got writes exactly this line: the
    // kernel hands namespace inodes out lowest-free-first (seen in the review: three inodes cycling over 19 stops).
    const record = JSON.parse(readFileSync(join(u().runtimeDir, "ctrexec/rootless.json"), "utf8")) as { pidns: string };
    const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    appendFileSync(join(u().runtimeDir, "ctrexec/ended-pid-namespaces"), `${boot} ${record.pidns}\n`);
    const run = ctrexec(["run", "--rm", "--", "sleep", "8"]);
    assert.ok(await waitFor(async () => (await runIds()).length === 1, 20_000), "the run never showed");
    const prune = await ctrexec(["rootless", "enter", "--", "unshare", "--pid", "--fork", "--mount-proc", process.execPath, cli(), "prune"]);
    assert.equal(prune.code, 0, show(prune));
    assert.equal((await runIds()).length, 1, `prune removed a live run:\n${show(prune)}`);
    const r = await run;
    assert.equal(r.code, 0, show(r));
  });

  it("^C at a terminal does not end the CLI before its run (the stand-in stays, as with root)", async () => {
    // The container's init says when SIGINT reaches it (it goes on waiting for its sleep): ^C must arrive, once.
    const init = `'trap "echo got-SIGINT" INT; sleep 6 & wait; wait'`;
    const inner = ["runuser", "-u", u().name, "--", "env", "-i", ...vars(), process.execPath, cli(), "run", "--rm", "--", "sh", "-c", init].join(" ");
    // script runs $SHELL, which CI may not set: /bin/sh (dash) dies of the terminal's SIGINT itself and never says
    // rc=, while bash, like a user's interactive shell, waits for the command and goes on when it was not killed.
    const script = spawn("script", ["-qec", `${inner}; echo "rc=$?"`, "/dev/null"], {
      cwd: u().scratch,
      env: { ...process.env, SHELL: "/bin/bash" },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    script.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
    const exited = new Promise((r) => script.once("exit", r));
    assert.ok(await waitFor(async () => (await runIds()).length === 1, 20_000), "the run never showed");
    script.stdin.write("\x03");
    // The CLI reports its end in "rc=": by then its run must be over (its init traps SIGINT and ends well: rc=0).
    assert.ok(await waitFor(() => /rc=\d+/.test(out), 20_000), `no exit:\n${out}`);
    const left = await runIds();
    script.stdin.end();
    await exited;
    assert.deepEqual(left, [], `the CLI exited (${/rc=\d+/.exec(out)?.[0]}) while its run went on`);
    assert.match(out, /rc=0/);
    assert.equal(out.match(/got-SIGINT/g)?.length, 1, `the run's init did not get ^C exactly once:\n${out}`);
  });

  it("CONTAINERD_ADDRESS naming the user's rootless socket runs, or says what to do", async () => {
    const address = join(u().runtimeDir, "containerd/containerd.sock");
    const r = await ctrexec(["run", "--rm", "--", "true"], undefined, { CONTAINERD_ADDRESS: address });
    assert.ok(r.code === 0 || /rootless/.test(r.stderr), show(r));
  });

  it("inside the namespaces with a clean environment, ctrexec still finds the daemon", async () => {
    const r = await ctrexec(["rootless", "enter", "--", "env", "-i", "PATH=/usr/bin:/bin", process.execPath, cli(), "run", "--rm", "--", "true"]);
    assert.equal(r.code, 0, show(r));
  });
});
