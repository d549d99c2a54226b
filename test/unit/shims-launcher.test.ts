import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { builtShimLauncher, chooseShimLauncher, launcherKnowsShimOf } from "../../src/executor/shims/launcher.js";

/** build/ at the package root: dist/test/unit/ is three levels below it. */
const built = fileURLToPath(new URL("../../../build/ctrexec-shim", import.meta.url));

describe("launcherKnowsShimOf", () => {
  it("is true for the containerd versions whose shim the launcher mirrors, and only those", () => {
    for (const v of ["1.6.20~ds1", "1.6.0", "v1.7.13", "1.7.0-rc.1"]) assert.equal(launcherKnowsShimOf(v), true, v);
    for (const v of ["1.5.9", "2.0.0", "v2.1.1", "1.60.1", "11.6.0", "", "dev"]) assert.equal(launcherKnowsShimOf(v), false, v);
  });
});

describe("chooseShimLauncher", () => {
  it("takes the option when given, else the built launcher for runc v2 on a containerd it knows", () => {
    assert.equal(chooseShimLauncher("/opt/l", "io.containerd.runc.v2", "2.0.0"), "/opt/l");
    assert.equal(chooseShimLauncher(false, "io.containerd.runc.v2", "1.6.20"), undefined);
    assert.equal(chooseShimLauncher(undefined, "io.containerd.runc.v2", "2.0.0"), undefined);
    assert.equal(chooseShimLauncher(undefined, "io.containerd.kata.v2", "1.6.20"), undefined);
    assert.equal(chooseShimLauncher(undefined, "io.containerd.runc.v2", "1.6.20"), builtShimLauncher());
  });
});

// The module runs from dist/src/executor/shims/ and, inlined, from the CLI bundle in dist/src/cli/: both must
// find build/ at the package root (the bundle: integration/shim-launcher.test.ts).
describe("builtShimLauncher", { skip: existsSync(built) ? false : "build/ctrexec-shim is not built" }, () => {
  it("finds build/ctrexec-shim at the package root from the compiled module", () => {
    assert.equal(builtShimLauncher(), built);
  });
});
