// Run by rootless-layout.test.ts in a user namespace of its own (unshare -U -r): prints what
// withRootlessDefaults makes of no options there, or the error it throws, as JSON on stdout.
import { spawn } from "node:child_process";
import { statSync, writeFileSync } from "node:fs";
import { withRootlessDefaults } from "../../src/executor/rootless-mode.js";
import { rootlessLayout } from "../../src/rootless/layout.js";

function writeRecord(childPid: number, userns: number): void {
  const record = {
    version: 1,
    rootlesskitPid: 1,
    childPid,
    network: "host",
    userns,
    address: "/run/user/1000/containerd/containerd.sock",
    startedAt: "2026-12-05T00:00:00.000Z",
  };
  writeFileSync(rootlessLayout().recordFile, JSON.stringify(record));
}

let daemon: ReturnType<typeof spawn> | undefined;
if (process.env["CTREXEC_TEST_RECORD_CHILD"]) {
  // A "daemon" in a user namespace this process owns, as rootlesskit's child is the user's: this process is outside it.
  daemon = spawn("unshare", ["-U", "sleep", "60"], { stdio: "ignore" });
  const own = statSync("/proc/self/ns/user").ino;
  let ino = own;
  for (let i = 0; i < 500 && ino === own; i++) {
    await new Promise((r) => setTimeout(r, 10));
    ino = statSync(`/proc/${daemon.pid}/ns/user`).ino;
  }
  writeRecord(daemon.pid!, ino);
}
if (process.env["CTREXEC_TEST_RECORD_SELF"]) {
  // This process is then "inside": the record names its own user namespace.
  writeRecord(1, statSync("/proc/self/ns/user").ino);
}
try {
  process.stdout.write(JSON.stringify({ options: withRootlessDefaults({}) }));
} catch (err) {
  const e = err as { code?: string; message?: string };
  process.stdout.write(JSON.stringify({ code: e.code, message: e.message }));
}
daemon?.kill("SIGKILL");
