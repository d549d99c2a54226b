import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { Timestamp as PbTimestamp } from "@bufbuild/protobuf/wkt";
import type { Container, ContainerSchema } from "../gen/containers_pb.js";
import type { Info as ContentInfo, Status as PbIngestStatus } from "../gen/content_pb.js";
import type { Envelope as PbEnvelope } from "../gen/events_pb.js";
import type { Image } from "../gen/images_pb.js";
import type { Plugin } from "../gen/introspection_pb.js";
import type { Lease, Resource } from "../gen/leases_pb.js";
import type { Kind, Info as SnapshotInfoMessage } from "../gen/snapshots_pb.js";
import type { TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart } from "../gen/task_events_pb.js";
import type { Process, Status } from "../gen/task_types_pb.js";
import type {
  CreateTaskRequestSchema,
  ExecProcessRequestSchema,
  KillRequestSchema,
  DeleteResponse as PbDeleteResponse,
  ResizePtyRequestSchema,
  WaitRequestSchema,
  WaitResponse,
} from "../gen/tasks_pb.js";
import type { Any as PbAny, Descriptor as PbDescriptor, Mount as PbMount } from "../gen/types_pb.js";

/**
 * The client's view of containerd's messages. Every type here is derived from the code generated from
 * proto/containerd (src/gen/): requests are the generated init shapes with the fields a call needs made required;
 * responses are `Data<>` of the generated message, the plain form that convert.ts builds.
 */

/** The fields of a request message, as `create()` accepts them (no `$typeName`). */
export type Init<D extends DescMessage> = Omit<Exclude<MessageInitShape<D>, MessageShape<D>>, "$typeName">;

/** google.protobuf.Timestamp with its int64 seconds as a number (dates are far below 2^53 seconds). */
export type Timestamp = { [K in keyof Omit<PbTimestamp, "$typeName" | "$unknown">]-?: number };

/**
 * A decoded message as plain data: no `$typeName`/`$unknown`, int64 as number (pids, exit statuses, sizes and
 * offsets stay below 2^53), Timestamp as {@link Timestamp}, an absent message field as null.
 */
export type Data<T> = T extends bigint
  ? number
  : T extends PbTimestamp
    ? Timestamp
    : T extends Uint8Array
      ? T
      : T extends readonly (infer E)[]
        ? Data<E>[]
        : T extends { readonly $typeName: string }
          ? {
              [K in keyof T as K extends "$typeName" | "$unknown" ? never : K]-?: undefined extends T[K]
                ? Data<Exclude<T[K], undefined>> | null
                : Data<T[K]>;
            }
          : T extends { [key: string]: infer V }
            ? { [key: string]: Data<V> }
            : T;

export type Any = Data<PbAny>;

/** A mount; `target` may be left out (runc mounts a rootfs at the bundle's root). */
export type Mount = Omit<Data<PbMount>, "target"> & Partial<Pick<Data<PbMount>, "target">>;

/** An OCI content descriptor (from a manifest's JSON, so `annotations` may be absent). */
export type Descriptor = Omit<Data<PbDescriptor>, "annotations"> & Partial<Pick<Data<PbDescriptor>, "annotations">>;

/** A process status by its name in task_types.proto. */
export type ProcessStatus = keyof typeof Status;
export type ProcessState = Omit<Data<Process>, "status"> & { status: ProcessStatus };

export type ContainerRecord = Data<Container>;

/** A container to create: the generated Container with what containerd requires. */
export type NewContainer = Init<typeof ContainerSchema> & { id: string; runtime: { name: string; options?: Any }; spec: Any };

export type CreateTaskRequest = Init<typeof CreateTaskRequestSchema> & { containerId: string };
export type ExecProcessRequest = Init<typeof ExecProcessRequestSchema> & { containerId: string; execId: string; spec: Any };
export type KillRequest = Init<typeof KillRequestSchema> & { containerId: string; signal: number };
export type ResizePtyRequest = Init<typeof ResizePtyRequestSchema> & { containerId: string; width: number; height: number };

/** A task's process: `execId` empty or absent for the init process. */
export type ProcessRef = Init<typeof WaitRequestSchema> & { containerId: string };

export type ExitStatus = Data<WaitResponse>;
export type DeleteResponse = Data<PbDeleteResponse>;

/** The payloads of /tasks/* events (task_events.proto), by the name their type URL ends with. */
interface TaskEventMessages {
  TaskStart: TaskStart;
  TaskExit: TaskExit;
  TaskDelete: TaskDelete;
  TaskOOM: TaskOOM;
  TaskExecAdded: TaskExecAdded;
  TaskExecStarted: TaskExecStarted;
}
export type TaskEvent = { [K in keyof TaskEventMessages]: { type: K } & Data<TaskEventMessages[K]> }[keyof TaskEventMessages];

export type Envelope = Omit<Data<PbEnvelope>, "event"> & {
  /** The payload decoded when its type is one we define (TaskExit, TaskOOM, ...), else null. */
  event: TaskEvent | null;
  /** The payload's type URL, e.g. `containerd.events.TaskExit`. */
  eventType: string;
};

export type PluginInfo = Data<Plugin>;

export type SnapshotKind = keyof typeof Kind;
export type SnapshotInfo = Omit<Data<SnapshotInfoMessage>, "kind"> & { kind: SnapshotKind };

export type ImageRecord = Data<Image>;
export type BlobInfo = Data<ContentInfo>;
export type LeaseInfo = Data<Lease>;
/** What a lease holds: `type` "content", "ingests" or "snapshots/<snapshotter>"; `id` a digest, ref or key. */
export type LeaseResource = Data<Resource>;
/** An ingest (a Content.Write not committed or aborted): its ref, bytes written, expected total and digest. */
export type IngestStatus = Data<PbIngestStatus>;
/** An image record to create or update: `labels` optional. */
export type NewImage = { name: string; target: Descriptor; labels?: Record<string, string> };

/** Any type URLs that containerd and runc expect for OCI JSON payloads. */
export const SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
export const PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/** An Any holding JSON: `value` is serialized with JSON.stringify unless it is already a JSON string. */
export function jsonAny(typeUrl: string, value: unknown): Any {
  return { typeUrl, value: Buffer.from(typeof value === "string" ? value : JSON.stringify(value)) };
}
