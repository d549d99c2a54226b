import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as to from "../../src/containerd/convert.js";
import { decode, encode, services } from "../../src/containerd/proto.js";
import { jsonAny, SPEC_TYPE_URL } from "../../src/containerd/types.js";
import { ContainerSchema } from "../../src/gen/containers_pb.js";
import { InfoSchema as BlobInfoSchema } from "../../src/gen/content_pb.js";
import { EnvelopeSchema } from "../../src/gen/events_pb.js";
import { ImageSchema } from "../../src/gen/images_pb.js";
import { Kind, InfoSchema as SnapshotInfoSchema } from "../../src/gen/snapshots_pb.js";
import { TaskExitSchema } from "../../src/gen/task_events_pb.js";
import { ProcessSchema, Status } from "../../src/gen/task_types_pb.js";
import { CreateTaskRequestSchema } from "../../src/gen/tasks_pb.js";

const protoDir = fileURLToPath(new URL("../../../proto/containerd/", import.meta.url));

/** `rpc Name(stream? Request) returns (stream? Response)` of every service in proto/, read from the text itself. */
function rpcsInProto(): { service: string; method: string; input: string; output: string; kind: string }[] {
  const out = [];
  for (const file of readdirSync(protoDir).filter((f) => f.endsWith(".proto"))) {
    const text = readFileSync(protoDir + file, "utf8");
    const pkg = /^package\s+([\w.]+);/m.exec(text)?.[1] ?? "";
    const qualify = (t: string) => (t.includes(".") ? t : `${pkg}.${t}`);
    for (const svc of text.matchAll(/service\s+(\w+)\s*\{([^}]*)\}/g)) {
      for (const m of (svc[2] ?? "").matchAll(/rpc\s+(\w+)\s*\(\s*(stream\s+)?([\w.]+)\s*\)\s*returns\s*\(\s*(stream\s+)?([\w.]+)\s*\)/g)) {
        const kind = m[2] ? (m[4] ? "bidi_streaming" : "client_streaming") : m[4] ? "server_streaming" : "unary";
        out.push({ service: `${pkg}.${svc[1]}`, method: m[1] ?? "", input: qualify(m[3] ?? ""), output: qualify(m[5] ?? ""), kind });
      }
    }
  }
  return out;
}

describe("the generated containerd protocol (src/gen from proto/)", () => {
  it("has a generated method, with the same request and response types, for every rpc in proto/", () => {
    const rpcs = rpcsInProto();
    assert.ok(rpcs.length >= 40, `only ${rpcs.length} rpcs found in proto/`);
    const generated = new Map(services.flatMap((s) => s.methods.map((m) => [`${s.typeName}/${m.name}`, m] as const)));
    for (const rpc of rpcs) {
      const m = generated.get(`${rpc.service}/${rpc.method}`);
      assert.ok(m, `no generated method for ${rpc.service}/${rpc.method}`);
      assert.equal(m.input.typeName, rpc.input, `${rpc.method} request`);
      assert.equal(m.output.typeName, rpc.output, `${rpc.method} response`);
      assert.equal(m.methodKind, rpc.kind, `${rpc.method} kind`);
    }
    assert.equal(generated.size, rpcs.length, "the generated services have methods proto/ does not declare");
  });

  it("encodes and decodes every request and response, empty", () => {
    for (const s of services) {
      for (const m of s.methods) {
        for (const schema of [m.input, m.output]) {
          assert.equal(encode(schema, {}).length, 0, schema.typeName);
          assert.equal(decode(schema, new Uint8Array(0)).$typeName, schema.typeName);
        }
      }
    }
  });

  it("encodes nested messages across files (tasks.proto uses types.proto's Mount)", () => {
    const bytes = encode(CreateTaskRequestSchema, { containerId: "x", rootfs: [{ type: "bind", source: "/a", options: ["rbind"] }] });
    const decoded = decode(CreateTaskRequestSchema, bytes);
    assert.equal(decoded.containerId, "x");
    assert.deepEqual(decoded.rootfs.map(to.mount), [{ type: "bind", source: "/a", target: "", options: ["rbind"] }]);
  });

  it("round-trips an Any, a map and Timestamps, with int64 seconds as numbers", () => {
    const spec = jsonAny(SPEC_TYPE_URL, { ociVersion: "1.1.0" });
    const at = { seconds: 1_733_300_000n, nanos: 123_456_789 };
    const bytes = encode(ContainerSchema, {
      id: "c1",
      labels: { "ctrexec.owner": "host", empty: "" },
      runtime: { name: "io.containerd.runc.v2" },
      spec,
      createdAt: at,
      extensions: { ext: { typeUrl: "t", value: Buffer.from([1, 2]) } },
    });
    assert.deepEqual(to.container(decode(ContainerSchema, bytes)), {
      id: "c1",
      labels: { "ctrexec.owner": "host", empty: "" },
      image: "",
      runtime: { name: "io.containerd.runc.v2", options: null },
      // Buffers, as before the generated code: `value.toString()` is the JSON.
      spec: { typeUrl: SPEC_TYPE_URL, value: Buffer.from(spec.value) },
      snapshotter: "",
      snapshotKey: "",
      createdAt: { seconds: 1_733_300_000, nanos: 123_456_789 },
      updatedAt: null,
      extensions: { ext: { typeUrl: "t", value: Buffer.from([1, 2]) } },
    });
  });

  it("round-trips int64 sizes as numbers, both ways", () => {
    const size = 2 ** 40 + 3;
    const blob = to.blobInfo(decode(BlobInfoSchema, encode(BlobInfoSchema, { digest: "sha256:ab", size: BigInt(size), labels: { a: "b" } })));
    assert.deepEqual(blob, { digest: "sha256:ab", size, createdAt: null, updatedAt: null, labels: { a: "b" } });
    const target = to.toDescriptor({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:cd", size });
    const image = to.image(decode(ImageSchema, encode(ImageSchema, { name: "img", target })));
    assert.deepEqual(image.target, { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:cd", size, annotations: {} });
  });

  it("gives enums by name, and an enum value this proto/ does not know as UNKNOWN", () => {
    const info = to.snapshotInfo(decode(SnapshotInfoSchema, encode(SnapshotInfoSchema, { name: "s", kind: Kind.COMMITTED })));
    assert.equal(info.kind, "COMMITTED");
    const proc = (status: number) => to.processState(decode(ProcessSchema, encode(ProcessSchema, { containerId: "c", pid: 7, status })));
    assert.equal(proc(Status.PAUSED).status, "PAUSED");
    assert.equal(proc(Status.RUNNING).pid, 7);
    assert.equal(proc(42).status, "UNKNOWN");
  });

  it("decodes a task event carried in an Envelope's Any, and leaves other payloads undecoded", () => {
    const exit = encode(TaskExitSchema, { containerId: "c", id: "c", pid: 9, exitStatus: 137, exitedAt: { seconds: 5n, nanos: 6 } });
    const env = to.envelope(
      decode(
        EnvelopeSchema,
        encode(EnvelopeSchema, { namespace: "ns", topic: "/tasks/exit", event: { typeUrl: "containerd.events.TaskExit", value: exit } }),
      ),
    );
    assert.deepEqual(env, {
      timestamp: null,
      namespace: "ns",
      topic: "/tasks/exit",
      event: { type: "TaskExit", containerId: "c", id: "c", pid: 9, exitStatus: 137, exitedAt: { seconds: 5, nanos: 6 } },
      eventType: "containerd.events.TaskExit",
    });
    const other = to.envelope(
      decode(
        EnvelopeSchema,
        encode(EnvelopeSchema, { topic: "/images/create", event: { typeUrl: "containerd.events.ImageCreate", value: new Uint8Array([10, 1, 97]) } }),
      ),
    );
    assert.equal(other.event, null);
    assert.equal(other.eventType, "containerd.events.ImageCreate");
  });

  it("a descriptor whose size is not a byte count is refused with a typed error, before anything is sent", () => {
    const d = { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: "sha256:aa" };
    for (const size of [undefined, 1.5, -1, Number.NaN, 2 ** 60]) {
      assert.throws(() => to.toDescriptor({ ...d, size } as never), { name: "InvalidArgumentError" }, String(size));
    }
    assert.equal(to.toDescriptor({ ...d, size: 42 }).size, 42n);
  });

  it("an event whose payload does not decode is reported without a payload, not thrown", () => {
    const bytes = encode(EnvelopeSchema, {
      topic: "/tasks/exit",
      namespace: "x",
      event: { typeUrl: "containerd.events.TaskExit", value: new Uint8Array([0xff, 0xff, 0xff]) },
    });
    const e = to.envelope(decode(EnvelopeSchema, bytes));
    assert.equal(e.eventType, "containerd.events.TaskExit");
    assert.equal(e.event, null);
  });
});
