import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

/**
 * Encoders and decoders for our containerd subset (proto/containerd). The .proto text is parsed once per
 * process (~8 ms); there is no generated code to keep in sync.
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
  const r = new protobuf.Root();
  // Parsed into one root, not loaded with loadSync: that resolves every type at once, generating a constructor
  // for each (~8 ms of every process start). Here a type is resolved when it is first used; all files are
  // parsed, so cross-file references resolve by name then.
  const wellKnown = new Set<string>();
  for (const f of readdirSync(protoDir).filter((n) => n.endsWith(".proto"))) {
    const parsed = protobuf.parse(readFileSync(protoDir + f, "utf8"), r, { keepCase: false });
    for (const i of parsed.imports ?? []) if (i.startsWith("google/protobuf/")) wellKnown.add(i);
  }
  // google/protobuf/*.proto come with protobufjs, as loadSync would add them.
  for (const name of wellKnown) {
    const json = protobuf.common.get(name);
    if (!json) throw new Error(`protobufjs has no ${name}`);
    r.addJSON(json["nested"] as Record<string, protobuf.AnyNestedObject>);
  }
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

/** Every `package.Service/Method` in our subset, e.g. to check that each resolves. */
export function allMethods(): { service: string; method: string }[] {
  const out: { service: string; method: string }[] = [];
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const nested of ns.nestedArray) {
      if (nested instanceof protobuf.Service) {
        for (const method of Object.keys(nested.methods)) out.push({ service: nested.fullName.replace(/^\./, ""), method });
      } else if (nested instanceof protobuf.Namespace) {
        walk(nested);
      }
    }
  };
  walk(loadRoot());
  return out;
}
