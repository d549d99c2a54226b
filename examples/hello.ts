/**
 * The README's first command: one real container job on the built-in default rootfs, through the library's
 * executor (what a build tool or CI runner would call).
 */
import { ContainerdExecutor } from "../src/executor/executor.js";

await using executor = await ContainerdExecutor.create({ root: process.env["CTREXEC_ROOT"] ?? "/var/lib/ctrexec" });
const { version } = await executor.client.version();
process.stderr.write(`containerd ${version}, namespace ${executor.namespace}\n`);

const started = performance.now();
const result = await executor.run({
  // No root: the built-in busybox rootfs. No network: this demo needs none, and so changes nothing on the host.
  process: {
    meta: {
      network: "none",
      args: ["sh", "-c", 'echo "hello from ctrexec"; id; uname -a; echo "hostname: $(hostname), cwd: $(pwd)"'],
      user: "user",
      cwd: "/home/user/work",
    },
    stdout: process.stdout,
    stderr: process.stderr,
  },
});
process.stderr.write(
  `exit code ${result.exitCode} after ${Math.round(performance.now() - started)} ms, ` +
    `cpu ${((result.usage.cpuNanos ?? 0) / 1e6).toFixed(1)} ms\n`,
);
