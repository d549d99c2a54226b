import type { Timestamp as PbTimestamp } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError } from "../errors.js";
import type { Container } from "../gen/containers_pb.js";
import type { Info as PbBlobInfo, Status as PbIngestStatus } from "../gen/content_pb.js";
import type { Image } from "../gen/images_pb.js";
import type { Plugin } from "../gen/introspection_pb.js";
import type { Lease, Resource } from "../gen/leases_pb.js";
import { type Process, Status } from "../gen/task_types_pb.js";
import type { DeleteResponse as PbDeleteResponse, WaitResponse } from "../gen/tasks_pb.js";
import type { Any as PbAny, Descriptor as PbDescriptor, Mount as PbMount } from "../gen/types_pb.js";
import type {
  Any,
  BlobInfo,
  ContainerRecord,
  Data,
  DeleteResponse,
  Descriptor,
  ExitStatus,
  ImageRecord,
  IngestStatus,
  LeaseInfo,
  LeaseResource,
  Mount,
  PluginInfo,
  ProcessState,
  ProcessStatus,
  Timestamp,
} from "./types.js";

/**
 * Decoded messages (src/gen/) to the client's plain data (types.ts): int64 to number, Timestamps to numbers,
 * enums to their names, absent messages to null, no `$typeName`. Each function names every field, so a field
 * added to proto/ fails to compile here until it is handled. A service's converters that need generated values
 * other than the tasks' (snapshots' kinds, events' payloads) are in their own module (convert-*.ts), so that they
 * load with that service only (services.ts).
 */

/** int64 values the client hands out (sizes, offsets, seconds) stay below 2^53. */
const num = (n: bigint): number => Number(n);

export const timestamp = (t: PbTimestamp | undefined): Timestamp | null => (t ? { seconds: num(t.seconds), nanos: t.nanos } : null);

/** As a Buffer (a Uint8Array), as before the generated code, so that `value.toString()` still gives the text; no copy. */
const bytes = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

export const any = (a: PbAny | undefined): Any | null => (a ? { typeUrl: a.typeUrl, value: bytes(a.value) } : null);

export const mount = (m: PbMount): Mount => ({ type: m.type, source: m.source, target: m.target, options: m.options });

function anyMap(m: { [key: string]: PbAny }): { [key: string]: Any } {
  const out: { [key: string]: Any } = {};
  for (const [k, v] of Object.entries(m)) out[k] = { typeUrl: v.typeUrl, value: bytes(v.value) };
  return out;
}

export function container(c: Container): ContainerRecord {
  return {
    id: c.id,
    labels: c.labels,
    image: c.image,
    runtime: c.runtime ? { name: c.runtime.name, options: any(c.runtime.options) } : null,
    spec: any(c.spec),
    snapshotter: c.snapshotter,
    snapshotKey: c.snapshotKey,
    createdAt: timestamp(c.createdAt),
    updatedAt: timestamp(c.updatedAt),
    extensions: anyMap(c.extensions),
  };
}

// Values a newer containerd may add are not in the generated enum: they read as UNKNOWN.
const processStatus = (s: Status): ProcessStatus => (Status[s] as ProcessStatus | undefined) ?? "UNKNOWN";

export function processState(p: Process): ProcessState {
  return {
    containerId: p.containerId,
    id: p.id,
    pid: p.pid,
    status: processStatus(p.status),
    stdin: p.stdin,
    stdout: p.stdout,
    stderr: p.stderr,
    terminal: p.terminal,
    exitStatus: p.exitStatus,
    exitedAt: timestamp(p.exitedAt),
  };
}

export const exitStatus = (w: WaitResponse): ExitStatus => ({ exitStatus: w.exitStatus, exitedAt: timestamp(w.exitedAt) });

export function deleteResponse(d: PbDeleteResponse): DeleteResponse {
  return { id: d.id, pid: d.pid, exitStatus: d.exitStatus, exitedAt: timestamp(d.exitedAt) };
}

export function plugin(p: Plugin): PluginInfo {
  return {
    type: p.type,
    id: p.id,
    requires: p.requires,
    platforms: p.platforms.map((x) => ({ os: x.os, architecture: x.architecture, variant: x.variant })),
    exports: p.exports,
    capabilities: p.capabilities,
  };
}

export function descriptor(d: PbDescriptor): Data<PbDescriptor> {
  return { mediaType: d.mediaType, digest: d.digest, size: num(d.size), annotations: d.annotations };
}

/** A descriptor as a request field (its size is int64 on the wire). */
export function toDescriptor(d: Descriptor) {
  // A manifest's size comes from the registry or the store: BigInt() of a missing or fractional one would throw untyped.
  if (!Number.isSafeInteger(d.size) || d.size < 0) {
    throw new InvalidArgumentError(`descriptor ${d.digest}: size ${JSON.stringify(d.size)} is not a byte count`, { field: "size" });
  }
  return { mediaType: d.mediaType, digest: d.digest, size: BigInt(d.size), annotations: d.annotations ?? {} };
}

export function image(i: Image): ImageRecord {
  return {
    name: i.name,
    labels: i.labels,
    target: i.target ? descriptor(i.target) : null,
    createdAt: timestamp(i.createdAt),
    updatedAt: timestamp(i.updatedAt),
  };
}

export function blobInfo(i: PbBlobInfo): BlobInfo {
  return { digest: i.digest, size: num(i.size), createdAt: timestamp(i.createdAt), updatedAt: timestamp(i.updatedAt), labels: i.labels };
}

export const lease = (l: Lease): LeaseInfo => ({ id: l.id, createdAt: timestamp(l.createdAt), labels: l.labels });

export const leaseResource = (r: Resource): LeaseResource => ({ id: r.id, type: r.type });

export function ingestStatus(s: PbIngestStatus): IngestStatus {
  return {
    startedAt: timestamp(s.startedAt),
    updatedAt: timestamp(s.updatedAt),
    ref: s.ref,
    offset: num(s.offset),
    total: num(s.total),
    expected: s.expected,
  };
}
