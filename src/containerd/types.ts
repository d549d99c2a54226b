/**
 * Typed shapes of the containerd messages we use (see proto/containerd). Field names are the camelCase of the
 * proto names; on decode every scalar has its default, so responses have no optional scalars.
 */

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export interface Any {
  typeUrl: string;
  value: Uint8Array;
}

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export type ProcessStatus = "UNKNOWN" | "CREATED" | "RUNNING" | "STOPPED" | "PAUSED" | "PAUSING";

export interface ProcessState {
  containerId: string;
  id: string;
  pid: number;
  status: ProcessStatus;
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  exitStatus: number;
  exitedAt: Timestamp | null;
}

export interface ContainerRecord {
  id: string;
  labels: Record<string, string>;
  image: string;
  runtime: { name: string; options: Any | null } | null;
  spec: Any | null;
  snapshotter: string;
  snapshotKey: string;
  createdAt: Timestamp | null;
  updatedAt: Timestamp | null;
}

export interface NewContainer {
  id: string;
  labels?: Record<string, string>;
  runtime: { name: string; options?: Any };
  spec: Any;
  snapshotter?: string;
  snapshotKey?: string;
  image?: string;
}

export interface CreateTaskRequest {
  containerId: string;
  rootfs?: Mount[];
  stdin?: string;
  stdout?: string;
  stderr?: string;
  terminal?: boolean;
  options?: Any;
  runtimePath?: string;
}

export interface ExecProcessRequest {
  containerId: string;
  execId: string;
  stdin?: string;
  stdout?: string;
  stderr?: string;
  terminal?: boolean;
  spec: Any;
}

export interface ProcessRef {
  containerId: string;
  /** Empty or absent for the init process. */
  execId?: string;
}

export interface ExitStatus {
  exitStatus: number;
  exitedAt: Timestamp | null;
}

export interface DeleteResponse extends ExitStatus {
  id: string;
  pid: number;
}

export interface KillRequest extends ProcessRef {
  signal: number;
  all?: boolean;
}

export interface ResizePtyRequest extends ProcessRef {
  width: number;
  height: number;
}

export interface Envelope {
  timestamp: Timestamp | null;
  namespace: string;
  topic: string;
  /** The payload decoded when its type is one we define (TaskExit, TaskOOM, ...), else null. */
  event: TaskEvent | null;
  /** The payload's type URL, e.g. `containerd.events.TaskExit`. */
  eventType: string;
}

export type TaskEvent =
  | { type: "TaskStart"; containerId: string; pid: number }
  | { type: "TaskExit"; containerId: string; id: string; pid: number; exitStatus: number; exitedAt: Timestamp | null }
  | { type: "TaskDelete"; containerId: string; id: string; pid: number; exitStatus: number; exitedAt: Timestamp | null }
  | { type: "TaskOOM"; containerId: string }
  | { type: "TaskExecAdded"; containerId: string; execId: string }
  | { type: "TaskExecStarted"; containerId: string; execId: string; pid: number };

export interface PluginInfo {
  type: string;
  id: string;
  requires: string[];
  platforms: { os: string; architecture: string; variant: string }[];
  exports: Record<string, string>;
  capabilities: string[];
}

export type SnapshotKind = "UNKNOWN" | "VIEW" | "ACTIVE" | "COMMITTED";

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: SnapshotKind;
  createdAt: Timestamp | null;
  updatedAt: Timestamp | null;
  labels: Record<string, string>;
}

/** Any type URLs that containerd and runc expect for OCI JSON payloads. */
export const SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
export const PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/** An Any holding JSON: `value` is serialized with JSON.stringify unless it is already a JSON string. */
export function jsonAny(typeUrl: string, value: unknown): Any {
  return { typeUrl, value: Buffer.from(typeof value === "string" ? value : JSON.stringify(value)) };
}

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ImageRecord {
  name: string;
  labels: Record<string, string>;
  target: Descriptor | null;
  createdAt: Timestamp | null;
  updatedAt: Timestamp | null;
}
