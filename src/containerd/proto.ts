import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

/**
 * Encoders and decoders for our containerd subset (proto/containerd). The .proto text is parsed once per
 * process (~10 ms); there is no generated code to keep in sync.
 */

const protoDir = fileURLToPath(new URL("../../../proto/containerd/", import.meta.url));

const decodeOptions: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
};

let root: protobuf.Root | undefined;

function loadRoot(): protobuf.Root {
  if (root) return root;
  const files = readdirSync(protoDir)
    .filter((f) => f.endsWith(".proto"))
    .map((f) => protoDir + f);
  const r = new protobuf.Root();
  r.loadSync(files, { keepCase: false });
  r.resolveAll();
  root = r;
  return r;
}

export interface Codec {
  encode(value: object): Buffer;
  decode(bytes: Buffer | Uint8Array): unknown;
}

const codecs = new Map<string, Codec>();

/** A codec for a fully qualified message name such as `containerd.services.tasks.v1.CreateTaskRequest`. */
export function codec(typeName: string): Codec {
  let c = codecs.get(typeName);
  if (c) return c;
  const type = loadRoot().lookupType(typeName);
  c = {
    encode: (value) => Buffer.from(type.encode(type.fromObject(value)).finish()),
    decode: (bytes) => type.toObject(type.decode(bytes), decodeOptions),
  };
  codecs.set(typeName, c);
  return c;
}

/** True when a message with this full name is defined in our subset. */
export function hasType(typeName: string): boolean {
  return loadRoot().lookup(typeName) instanceof protobuf.Type;
}

/** Request and response type names of `package.Service/Method`. */
export function methodTypes(service: string, method: string): { request: string; response: string } {
  const svc = loadRoot().lookupService(service);
  const m = svc.methods[method];
  if (!m) throw new Error(`no method ${method} in ${service}`);
  m.resolve();
  const req = m.resolvedRequestType;
  const res = m.resolvedResponseType;
  if (!req || !res) throw new Error(`unresolved types for ${service}/${method}`);
  return { request: req.fullName.replace(/^\./, ""), response: res.fullName.replace(/^\./, "") };
}
