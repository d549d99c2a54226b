import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { DescService } from "@bufbuild/protobuf";
import * as to from "../../src/containerd/convert.js";
import { envelope } from "../../src/containerd/convert-events.js";
import { snapshotInfo } from "../../src/containerd/convert-snapshots.js";
import { services as loaders } from "../../src/containerd/services.js";
import { jsonAny, SPEC_TYPE_URL } from "../../src/containerd/types.js";
import { ContainerSchema } from "../../src/gen/containers_pb.js";
import { InfoSchema as BlobInfoSchema } from "../../src/gen/content_pb.js";
import { EnvelopeSchema } from "../../src/gen/events_pb.js";
import { ImageSchema } from "../../src/gen/images_pb.js";
import { Kind, InfoSchema as SnapshotInfoSchema } from "../../src/gen/snapshots_pb.js";
import { TaskExitSchema } from "../../src/gen/task_events_pb.js";
import { ProcessSchema, Status } from "../../src/gen/task_types_pb.js";
import { CreateTaskRequestSchema } from "../../src/gen/tasks_pb.js";
import { decode, encode } from "../helpers/proto.js";

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
  /** Every service as the client loads it (services.ts): a service in proto/ without a loader fails below. */
  let services: DescService[] = [];
  before(async () => {
    services = (await Promise.all(Object.values(loaders).map((load) => load()))).map((l) => l.service);
  });

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
    const info = snapshotInfo(decode(SnapshotInfoSchema, encode(SnapshotInfoSchema, { name: "s", kind: Kind.COMMITTED })));
    assert.equal(info.kind, "COMMITTED");
    const proc = (status: number) => to.processState(decode(ProcessSchema, encode(ProcessSchema, { containerId: "c", pid: 7, status })));
    assert.equal(proc(Status.PAUSED).status, "PAUSED");
    assert.equal(proc(Status.RUNNING).pid, 7);
    assert.equal(proc(42).status, "UNKNOWN");
  });

  it("decodes a task event carried in an Envelope's Any, and leaves other payloads undecoded", () => {
    const exit = encode(TaskExitSchema, { containerId: "c", id: "c", pid: 9, exitStatus: 137, exitedAt: { seconds: 5n, nanos: 6 } });
    const env = envelope(
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
    const other = envelope(
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
    const e = envelope(decode(EnvelopeSchema, bytes));
    assert.equal(e.eventType, "containerd.events.TaskExit");
    assert.equal(e.event, null);
  });
});

describe("the client's protocol loading (services.ts)", () => {
  /** The generated files a fresh process loads for `calls` against a socket that does not exist (each call fails). */
  function genFilesLoadedBy(calls: string): string[] {
    const dir = mkdtempSync(join(tmpdir(), "ctrexec-gen-"));
    try {
      const log = join(dir, "gen.log");
      const client = new URL("../../src/containerd/client.js", import.meta.url).href;
      const script = `const { ContainerdClient } = await import(${JSON.stringify(client)});
        const c = new ContainerdClient({ address: ${JSON.stringify(join(dir, "none.sock"))} });
        for (const call of [${calls}]) await call(c).catch(() => {});
        await c.close();`;
      const register = new URL("../helpers/gen-imports-register.js", import.meta.url).href;
      const r = spawnSync(process.execPath, ["--import", register, "--input-type=module", "-e", script], {
        env: { ...process.env, CTREXEC_TEST_GEN_LOG: log },
        encoding: "utf8",
      });
      assert.equal(r.status, 0, r.stderr);
      return [...new Set(readFileSync(log, "utf8").trim().split("\n"))].filter(Boolean).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it("loads nothing of the protocol until a call, then only the files of the services called", () => {
    assert.deepEqual(genFilesLoadedBy(""), []);
    assert.deepEqual(genFilesLoadedBy("(c) => c.containers.list()"), ["containers_pb", "task_types_pb", "types_pb"]);
    // What `ctrexec run` calls: not Content, Images, Snapshots, Leases, Diff, Introspection or Namespaces.
    assert.deepEqual(
      genFilesLoadedBy(
        "(c) => c.version(), (c) => c.containers.list(), (c) => c.tasks.list(), async (c) => { for await (const e of c.events.subscribe()) void e; }",
      ),
      ["containers_pb", "events_pb", "task_events_pb", "task_types_pb", "tasks_pb", "types_pb", "version_pb"],
    );
    assert.deepEqual(genFilesLoadedBy("(c) => c.snapshots.list('overlayfs')"), ["snapshots_pb", "task_types_pb", "types_pb"]);
  });
});
