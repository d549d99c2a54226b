/**
 * The README's first command: one real container job on the built-in default rootfs, driven by the low-level
 * client and IO layer (the executor and CLI build on these).
 */
import { ContainerdClient } from "../src/containerd/client.js";
import { runTask } from "../src/containerd/run-task.js";
import { defaultSpec } from "../src/oci/defaults.js";
import { ensureDefaultRootfs } from "../src/rootfs/default-rootfs.js";

const stateDir = process.env["CTREXEC_ROOT"] ?? "/var/lib/ctrexec";
const rootfs = await ensureDefaultRootfs(stateDir);
await using client = new ContainerdClient();
const { version } = await client.version();
const id = `hello-${process.pid}-${Date.now().toString(36)}`;

const spec = defaultSpec(client.namespace, id);
spec.hostname = "ctrexec";
spec.process!.args = ["sh", "-c", 'echo "hello from ctrexec"; id; uname -a; echo "cwd: $(pwd)"'];
spec.mounts = spec.mounts!.filter((m) => m.destination !== "/run");

process.stderr.write(`containerd ${version}, namespace ${client.namespace}, rootfs ${rootfs}\n`);
const started = performance.now();
const { exitStatus } = await runTask(client, {
  id,
  spec,
  rootfs: [{ type: "bind", source: rootfs, options: ["rbind", "ro"] }],
  fifoRoot: "/run/ctrexec/fifo",
  streams: { stdout: process.stdout, stderr: process.stderr },
  labels: { "ctrexec.example": "hello" },
});
process.stderr.write(`exit status ${exitStatus} after ${Math.round(performance.now() - started)} ms\n`);
process.exitCode = exitStatus;
