import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import * as containerdEntry from "../../src/containerd/index.js";
import * as mainEntry from "../../src/index.js";
import * as ociEntry from "../../src/oci/index.js";

const read = (path: string) => readFileSync(new URL(`../../../${path}`, import.meta.url), "utf8");

/** The names an entry module exports, types included: every name listed in its export statements. */
function exportedNames(source: string): string[] {
  const names: string[] = [];
  for (const m of source.matchAll(/export\s+(?:type\s+)?\{([\s\S]*?)\}\s+from\s+"/g)) {
    const body = m[1]!.replace(/\/\*\*[\s\S]*?\*\//g, "");
    for (const spec of body.split(",")) {
      const name = spec
        .trim()
        .replace(/^type\s+/, "")
        .split(/\s+as\s+/)
        .pop();
      if (name) names.push(name);
    }
  }
  return names;
}

/** Export specifiers (or single-line export statements) not preceded by a one-line TSDoc. */
function undocumented(source: string): string[] {
  const lines = source.split("\n");
  const out: string[] = [];
  lines.forEach((line, i) => {
    const t = line.trim();
    const isSpecifier = /^(type\s+)?[A-Za-z_]\w*,?$/.test(t) && !t.startsWith("export");
    const isStatement = /^export (type )?(\*|\{[^}]*\}) from /.test(t);
    if (!isSpecifier && !isStatement) return;
    if (!lines[i - 1]?.trim().endsWith("*/")) out.push(t);
  });
  return out;
}

describe("the public entry points", () => {
  it("the main entry exports exactly its documented values, and none of the lower layer", () => {
    assert.deepEqual(Object.keys(mainEntry).sort(), [
      "AlreadyExistsError",
      "BridgeProvider",
      "CanceledError",
      "CniError",
      "ContainerExitedError",
      "ContainerdExecutor",
      "CtrexecError",
      "DEFAULT_FIFO_ROOT",
      "DEFAULT_SNAPSHOTTER",
      "DEFAULT_STATE_DIR",
      "DataLossError",
      "DeadlineExceededError",
      "ExitError",
      "FailedPreconditionError",
      "InvalidArgumentError",
      "NotFoundError",
      "PruneIncompleteError",
      "StartError",
      "UNKNOWN_EXIT_STATUS",
      "UnauthenticatedError",
      "UnavailableError",
      "UnknownError",
      "bindMountable",
      "chainIds",
      "defaultBridgeConfig",
      "defaultRootfsPath",
      "diagnoseHost",
      "ensureDefaultRootfs",
      "enterArgs",
      "findRootless",
      "getRun",
      "hostNetwork",
      "imageMountable",
      "inUserNamespace",
      "listRuns",
      "loginRegistry",
      "logoutRegistry",
      "noneNetwork",
      "parseReference",
      "prune",
      "pullImage",
      "resolveImage",
      "rootlessLayout",
      "rootlessStatus",
      "silentLogger",
      "snapshotMountable",
      "startRootless",
      "stderrLogger",
      "stopRootless",
      "tmpfsMountable",
      "unpackImage",
      "withImageDefaults",
    ]);
  });

  it("the lower-level entries export the client, IO and cleanup, and spec generation", () => {
    assert.deepEqual(Object.keys(containerdEntry).sort(), [
      "ContainerdClient",
      "DEFAULT_ADDRESS",
      "DEFAULT_NAMESPACE",
      "DEFAULT_RUNTIME",
      "PROCESS_TYPE_URL",
      "ProcessIO",
      "SPEC_TYPE_URL",
      "deleteContainerRecord",
      "deleteExecProcess",
      "deleteTask",
      "jsonAny",
    ]);
    assert.deepEqual(Object.keys(ociEntry).sort(), ["ULIMIT_NAMES", "defaultSpec", "detectHostFeatures", "generateSpec", "parseIdMapFlag"]);
  });

  it("every export has a TSDoc line, and docs/api.md names every export of the main entry", () => {
    const docs = read("docs/api.md");
    for (const path of ["src/index.ts", "src/containerd/index.ts", "src/oci/index.ts"]) {
      assert.deepEqual(undocumented(read(path)), [], `${path}: exports without a TSDoc line`);
    }
    const names = exportedNames(read("src/index.ts"));
    assert.ok(names.length > Object.keys(mainEntry).length, "the type exports were found too");
    assert.deepEqual(
      names.filter((n) => !docs.includes(`\`${n}\``)),
      [],
      "exports of src/index.ts missing from docs/api.md",
    );
  });
});
