import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { imageMountable } from "../../src/image/mountables.js";
import { resolveImage } from "../../src/image/resolve.js";
import { withEnv } from "./env.js";

/**
 * An image root pulled by the library as the rootless user: the outer test (host root) built a small image with
 * test/helpers/oci-image.ts and pushed it to a registry on the host's 127.0.0.1, which rootlesskit's --net=host
 * network reaches as it is.
 */
describe("rootless: an image root pulled from a registry (inside rootlesskit's namespaces)", () => {
  it("pulls, unpacks into the rootless overlayfs and runs the image; a second run finds it present", () =>
    withEnv("image", async (env) => {
      const ref = process.env["CTREXEC_TEST_IMAGE"];
      const marker = process.env["CTREXEC_TEST_IMAGE_MARKER"];
      assert.ok(ref && marker, "CTREXEC_TEST_IMAGE(_MARKER) is not set (the outer test pushes the image)");
      const image = await resolveImage(env.client, ref, { pull: "missing" });
      const run = async (script: string) => env.output(script, {}, { root: { source: imageMountable(env.client, image) } });
      assert.equal(await run("cat /layer.txt; id -u; echo changed > /layer.txt"), `${marker}\n0\n`);
      // Each run has its own snapshot on the image: the first run's change is not the second's.
      assert.equal(await run("cat /layer.txt; grep ' / ' /proc/mounts | cut -d' ' -f3"), `${marker}\noverlay\n`);
      const snapshots = await env.client.snapshots.list("overlayfs");
      assert.ok(snapshots.length >= 2 && snapshots.every((s) => s.kind === "COMMITTED"), JSON.stringify(snapshots.map((s) => [s.kind, s.name])));
    }));
});
