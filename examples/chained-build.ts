/**
 * A build in three chained steps on an image, the way a build tool drives ctrexec: each step runs on the
 * snapshot the previous one committed, and the last step's artifact is copied out through a bind mount.
 *
 *   node dist/examples/chained-build.js IMAGE [OUTPUT_DIR]
 *
 * IMAGE must be in containerd's store (`ctr -n ctrexec images import image.tar` or `... images pull`); it needs
 * a POSIX shell with sed, tar, gzip and sha256sum (busybox has them).
 */
import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { ContainerdExecutor, type ExecutorOptions } from "../src/executor/executor.js";
import { bindMountable } from "../src/executor/mountables.js";
import type { Mountable, MountSpec } from "../src/executor/types.js";
import { withImageDefaults } from "../src/image/image.js";
import { imageMountable, snapshotMountable } from "../src/image/mountables.js";
import { resolveImage } from "../src/image/resolve.js";

const [imageRef, outDir = "./site-out"] = process.argv.slice(2);
if (!imageRef) {
  process.stderr.write("usage: chained-build IMAGE [OUTPUT_DIR]\n");
  process.exit(2);
}
const options: ExecutorOptions = { defaultNetwork: "none" };
if (process.env["CTREXEC_ROOT"]) options.root = process.env["CTREXEC_ROOT"];
if (process.env["CTREXEC_FIFO_ROOT"]) options.fifoRoot = process.env["CTREXEC_FIFO_ROOT"];
await using executor = await ContainerdExecutor.create(options);
const client = executor.client;
const image = await resolveImage(client, imageRef);
const tag = `${process.pid}-${Date.now().toString(36)}`;
const steps = [`build-${tag}-sources`, `build-${tag}-html`];

async function step(name: string, root: Mountable, script: string, mounts: MountSpec[] = []): Promise<void> {
  process.stderr.write(`step ${name}\n`);
  const meta = withImageDefaults({ args: ["sh", "-euc", script], user: "0", cwd: "/src" }, image.imageConfig);
  await executor.run({ root: { source: root }, mounts, process: { meta, stdout: process.stderr, stderr: process.stderr } });
}

try {
  // 1. Sources: a small site in a markdown-ish format.
  await step(
    "sources",
    imageMountable(client, image, { commit: steps[0]! }),
    `
    mkdir -p /src/pages
    printf '# Home\\nWelcome to the *ctrexec* demo site.\\n' > /src/pages/index.txt
    printf '# About\\nBuilt in three chained container steps.\\n' > /src/pages/about.txt`,
  );
  // 2. Build: each page to HTML, on the first step's snapshot.
  await step(
    "html",
    snapshotMountable(client, steps[0]!, { commit: steps[1]! }),
    `
    mkdir -p /build
    for f in /src/pages/*.txt; do
      n=$(basename "$f" .txt)
      sed -e 's|^# \\(.*\\)|<h1>\\1</h1>|' -e 's|\\*\\([^*]*\\)\\*|<em>\\1</em>|g' -e '/^<h1>/!s|.*|<p>&</p>|' "$f" > "/build/$n.html"
    done`,
  );
  // 3. Package: a tarball and its checksum, copied out through a bind mount.
  const out = resolve(outDir);
  await mkdir(out, { recursive: true });
  await step(
    "package",
    snapshotMountable(client, steps[1]!),
    "cd /build && tar -czf /out/site.tar.gz *.html && cd /out && sha256sum site.tar.gz > site.tar.gz.sha256",
    [{ source: bindMountable(out), dest: "/out" }],
  );
  process.stdout.write(`${out}/site.tar.gz\n`);
} finally {
  for (const s of [...steps].reverse()) await client.snapshots.remove({ snapshotter: "overlayfs", key: s }).catch(() => {});
}
