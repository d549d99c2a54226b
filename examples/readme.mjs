import { ContainerdExecutor, tmpfsMountable } from "ctrexec";

const executor = await ContainerdExecutor.create(); // CONTAINERD_ADDRESS and CONTAINERD_NAMESPACE are honoured
try {
  const result = await executor.run({
    // No root: the built-in busybox rootfs, copy-on-write. Your own: root: { source: bindMountable("/srv/rootfs") }
    mounts: [{ source: tmpfsMountable({ size: 64 << 20 }), dest: "/tmp" }],
    process: {
      meta: { args: ["sh", "-c", "echo hello from ctrexec, CI=$CI; id"], user: "user", cwd: "/home/user/work", env: ["CI=1"], network: "none" },
      stdout: process.stdout,
      stderr: process.stderr,
    },
    signal: AbortSignal.timeout(600_000), // cancel → SIGKILL, bounded cleanup
    onStarted: ({ id }) => console.error(`started ${id}`),
  });
  console.log(result.exitCode, result.usage); // 0 { cpuNanos, memoryPeakBytes, pids }
} finally {
  await executor.close(); // what `await using` does: waits for the cleanup of everything the executor started
}
