import { Kind, type Info as PbSnapshotInfo } from "../gen/snapshots_pb.js";
import { timestamp } from "./convert.js";
import type { SnapshotInfo, SnapshotKind } from "./types.js";

/** Snapshots' converters (see convert.ts): the generated enum they read loads with the Snapshots service only. */

// Values a newer containerd may add are not in the generated enum: they read as UNKNOWN.
const snapshotKind = (k: Kind): SnapshotKind => (Kind[k] as SnapshotKind | undefined) ?? "UNKNOWN";

export function snapshotInfo(i: PbSnapshotInfo): SnapshotInfo {
  return {
    name: i.name,
    parent: i.parent,
    kind: snapshotKind(i.kind),
    createdAt: timestamp(i.createdAt),
    updatedAt: timestamp(i.updatedAt),
    labels: i.labels,
  };
}
