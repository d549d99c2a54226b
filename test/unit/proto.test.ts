import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { allMethods, codec, hasType, methodTypes } from "../../src/containerd/proto.js";

describe("the containerd .proto subset", () => {
  // Types resolve when first used, not at load: an unresolvable reference must fail here, not in a run.
  it("resolves every method's request and response, and every field they reach", () => {
    const methods = allMethods();
    assert.ok(methods.length >= 40, `only ${methods.length} methods found`);
    const seen = new Set<string>();
    for (const { service, method } of methods) {
      const { request, response } = methodTypes(service, method);
      for (const t of [request, response]) {
        if (seen.has(t)) continue;
        seen.add(t);
        assert.ok(hasType(t), t);
        const c = codec(t);
        assert.deepEqual(c.decode(c.encode({})), c.decode(Buffer.alloc(0)), t);
      }
    }
  });

  it("carries the well-known types the services import", () => {
    for (const t of ["google.protobuf.Empty", "google.protobuf.Timestamp", "google.protobuf.FieldMask"]) assert.ok(hasType(t), t);
  });

  it("encodes nested messages across files (tasks.proto uses types.proto's Mount)", () => {
    const c = codec("containerd.services.tasks.v1.CreateTaskRequest");
    const decoded = c.decode(c.encode({ containerId: "x", rootfs: [{ type: "bind", source: "/a", options: ["rbind"] }] })) as {
      containerId: string;
      rootfs: { type: string; source: string; options: string[] }[];
    };
    assert.equal(decoded.containerId, "x");
    assert.deepEqual(decoded.rootfs[0], { type: "bind", source: "/a", target: "", options: ["rbind"] });
  });
});
