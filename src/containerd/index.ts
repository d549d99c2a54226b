/**
 * `ctrexec/containerd`: the lower layer the executor is built on — a typed containerd client, the FIFO-based
 * process IO and the bounded task cleanup. Lower-level and less stable than the main entry `ctrexec`: names and
 * shapes here may change between minor versions. Most callers want `ContainerdExecutor` instead.
 */

export {
  /** Options of each call: deadline, abort signal. */
  type CallOptions,
  /** A typed containerd client over one HTTP/2 connection to the socket; errors are ctrexec's typed errors. */
  ContainerdClient,
  /** Options of `new ContainerdClient()`: address, namespace, default deadline, lease. */
  type ContainerdClientOptions,
  /** What `client.content.write` reads a blob from: a Readable or an (async) iterable of byte chunks. */
  type ContentSource,
  /** Options of `client.content.write`: labels set at commit, abort signal, progress callback. */
  type ContentWriteOptions,
  /** The default containerd socket (unless $CONTAINERD_ADDRESS is set). */
  DEFAULT_ADDRESS,
  /** The default containerd namespace (unless $CONTAINERD_NAMESPACE is set): "ctrexec". */
  DEFAULT_NAMESPACE,
} from "./client.js";
export {
  /** The FIFO paths a ProcessIO hands to Tasks.Create / Tasks.Exec. */
  type IOConfig,
  /** Where a process's FIFOs will be, decided before they exist (`ProcessIO.plan`). */
  type PlannedIO,
  /** One process's FIFOs: created, connected to the caller's streams, drained and closed in the right order. */
  ProcessIO,
  /** Options of `ProcessIO.create`: the streams, the FIFO root and the process's name. */
  type ProcessIOOptions,
  /** The caller's stdin, stdout and stderr for a process, and whether it has a terminal. */
  type ProcessStreams,
} from "./io.js";
export {
  /** The runc v2 runtime name containers get by default. */
  DEFAULT_RUNTIME,
  /** Deletes a container record, bounded; one already gone counts as deleted. */
  deleteContainerRecord,
  /** Deletes an exec process, bounded; one already gone counts as deleted. */
  deleteExecProcess,
  /** Deletes a task whatever its state (resumed, killed and waited for first), bounded. */
  deleteTask,
} from "./task-cleanup.js";
/** containerd's request, response and event types, as the client takes and returns them. */
export type {
  /** A protobuf Any: type URL and bytes (a Buffer). */
  Any,
  /** A blob in containerd's content store: digest, size, labels, times. */
  BlobInfo,
  /** A container record as Containers.Get and List return it. */
  ContainerRecord,
  /** Tasks.Create's request: container id, rootfs mounts, stdio paths, runtime path. */
  CreateTaskRequest,
  /** What deleting a task or process reports: pid, exit status, exit time. */
  DeleteResponse,
  /** An OCI content descriptor: media type, digest, size. */
  Descriptor,
  /** One event from Events.Subscribe: topic, namespace, time, the decoded task event. */
  Envelope,
  /** Tasks.Exec's request: container and exec ids, process spec, stdio paths. */
  ExecProcessRequest,
  /** Tasks.Wait's answer: exit status and time. */
  ExitStatus,
  /** An image record: name, target descriptor, labels, times. */
  ImageRecord,
  /** An ingest (a content write not committed or aborted): ref, offset, expected total and digest, times. */
  IngestStatus,
  /** Tasks.Kill's request: the process, the signal, whether to signal all. */
  KillRequest,
  /** A lease: id, labels, creation time. */
  LeaseInfo,
  /** What a lease holds: id and type ("content", "ingests", "snapshots/<snapshotter>"). */
  LeaseResource,
  /** A containerd-style mount: type, source, options (no destination). */
  Mount,
  /** Containers.Create's record: id, runtime, spec, labels. */
  NewContainer,
  /** Images.Create's and Update's record: name, target descriptor, labels. */
  NewImage,
  /** A containerd plugin as Introspection reports it. */
  PluginInfo,
  /** A task's init process (containerId) or an exec process (containerId and execId). */
  ProcessRef,
  /** A task or process as Tasks.Get and List return it. */
  ProcessState,
  /** A process's status by name: CREATED, RUNNING, STOPPED, PAUSED, PAUSING or UNKNOWN. */
  ProcessStatus,
  /** Tasks.ResizePty's request: the process and its new size. */
  ResizePtyRequest,
  /** A snapshot: name, parent, kind, labels, times. */
  SnapshotInfo,
  /** A snapshot's kind by name: VIEW, ACTIVE, COMMITTED or UNKNOWN. */
  SnapshotKind,
  /** A task event (start, exit, delete, OOM, exec added or started, paused, resumed), decoded. */
  TaskEvent,
  /** A protobuf Timestamp: seconds and nanos as numbers. */
  Timestamp,
} from "./types.js";
export {
  /** Wraps a JSON value as a protobuf Any (containerd's spec and process fields). */
  jsonAny,
  /** The Any type URL of an OCI process (Tasks.Exec's spec). */
  PROCESS_TYPE_URL,
  /** The Any type URL of an OCI runtime spec (Containers.Create's spec). */
  SPEC_TYPE_URL,
} from "./types.js";
