/**
 * Rootless mode (issue #22): what the interrupted-start clean-up takes for its own (from a second adversarial review).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { rootlessLayout } from "../../src/rootless/layout.js";
import { isOurKit } from "../../src/rootless/terminate.js";

const children: ChildProcess[] = [];
const dirs: string[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A process whose argv is `argv` (argv[0] as given), idle until killed. */
async function withArgv(argv: string[]): Promise<number> {
  const c = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60_000)", "--", ...argv.slice(1)], { argv0: argv[0], stdio: "ignore" });
  children.push(c);
  const pid = c.pid;
  assert.ok(pid);
  // Until node has exec'd: argv0 shows in cmdline from then on.
  for (let i = 0; i < 100 && !readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith(argv[0]!); i++) await sleep(10);
  return pid;
}

describe("isOurKit", () => {
  it("does not take rootless nerdctl's rootlesskit (containerd-rootless.sh, same --state-dir) for an interrupted start of ours", async () => {
    const rt = mkdtempSync(join(tmpdir(), "ctrexec-rw2-"));
    dirs.push(rt);
    const layout = rootlessLayout({ XDG_RUNTIME_DIR: rt, HOME: rt });
    // containerd-rootless.sh: exec rootlesskit --state-dir="$XDG_RUNTIME_DIR/containerd-rootless" ... "$0" "$@"
    const pid = await withArgv([
      "rootlesskit",
      `--state-dir=${layout.kitStateDir}`,
      "--net=slirp4netns",
      "--mtu=65520",
      "--disable-host-loopback",
      "--port-driver=builtin",
      "--copy-up=/etc",
      "--copy-up=/run",
      "--copy-up=/var/lib",
      "--propagation=rslave",
      "/usr/local/bin/containerd-rootless.sh",
    ]);
    // `rootless start` and `stop` end every kit isOurKit names that no record names: this one holds the user's
    // nerdctl containerd and its containers.
    assert.equal(isOurKit(pid, layout), false, "a rootlesskit ctrexec did not start would be killed by `ctrexec rootless stop`");
  });
});
