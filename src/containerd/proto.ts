import { create, type DescMessage, type DescService, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { Containers } from "../gen/containers_pb.js";
import { Content } from "../gen/content_pb.js";
import { Diff } from "../gen/diff_pb.js";
import { Events } from "../gen/events_pb.js";
import { Images } from "../gen/images_pb.js";
import { Introspection } from "../gen/introspection_pb.js";
import { Leases } from "../gen/leases_pb.js";
import { Namespaces } from "../gen/namespaces_pb.js";
import { Snapshots } from "../gen/snapshots_pb.js";
import { Tasks } from "../gen/tasks_pb.js";
import { Version } from "../gen/version_pb.js";

/** Content.Write of a blob from a stream (uses the generated enum, so it loads with the protocol). */
export { writeContent } from "./content-write.js";
/** Decoded messages to the client's plain data. */
export * as to from "./convert.js";
/**
 * The containerd services of our subset (proto/containerd), as generated into src/gen/ by
 * scripts/gen-proto.mjs. The generated descriptors carry each method's path and its request and response
 * types; the codecs are @bufbuild/protobuf's, which read those descriptors (no code is generated at run time).
 * The client loads this module on its first call (see client.ts), so nothing else may import it eagerly.
 */
export { Containers, Content, Diff, Events, Images, Introspection, Leases, Namespaces, Snapshots, Tasks, Version };

/** Every service, e.g. to check that each method in proto/ has generated types. */
export const services: readonly DescService[] = [
  Containers,
  Content,
  Diff,
  Events,
  Images,
  Introspection,
  Leases,
  Namespaces,
  Snapshots,
  Tasks,
  Version,
];

/** A message's wire form from its fields. */
export function encode<D extends DescMessage>(schema: D, fields: MessageInitShape<D>): Uint8Array {
  return toBinary(schema, create(schema, fields));
}

/** A message from its wire form; a malformed one throws. */
export function decode<D extends DescMessage>(schema: D, bytes: Uint8Array): MessageShape<D> {
  return fromBinary(schema, bytes);
}
