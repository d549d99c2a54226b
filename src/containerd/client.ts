import { codec, hasType } from "./proto.js";
import { type CallOptions, type CallScope, GrpcTransport } from "./transport.js";
import type {
  ContainerRecord,
  CreateTaskRequest,
  Descriptor,
  ImageRecord,
  DeleteResponse,
  Envelope,
  ExecProcessRequest,
  ExitStatus,
  KillRequest,
  Mount,
  NewContainer,
  PluginInfo,
  ProcessState,
  ProcessRef,
  ResizePtyRequest,
  SnapshotInfo,
  TaskEvent,
} from "./types.js";

export type { CallOptions } from "./transport.js";

export const DEFAULT_ADDRESS = "/run/containerd/containerd.sock";
export const DEFAULT_NAMESPACE = "ctrexec";

export interface ContainerdClientOptions {
  /** Socket path or `unix://` URL. Default: `$CONTAINERD_ADDRESS`, else /run/containerd/containerd.sock. */
  address?: string | undefined;
  /** containerd namespace sent with every call. Default: `$CONTAINERD_NAMESPACE`, else `ctrexec`. */
  namespace?: string | undefined;
  /** Deadline of every call but Tasks.Wait and Events.Subscribe, which block until their event. Default 60 s. */
  timeoutMs?: number | undefined;
  /** A lease id sent with every call (see `withLease`). */
  lease?: string | undefined;
}

const S = {
  version: "containerd.services.version.v1.Version",
  containers: "containerd.services.containers.v1.Containers",
  tasks: "containerd.services.tasks.v1.Tasks",
  events: "containerd.services.events.v1.Events",
  introspection: "containerd.services.introspection.v1.Introspection",
  namespaces: "containerd.services.namespaces.v1.Namespaces",
  snapshots: "containerd.services.snapshots.v1.Snapshots",
  images: "containerd.services.images.v1.Images",
  content: "containerd.services.content.v1.Content",
  diff: "containerd.services.diff.v1.Diff",
  leases: "containerd.services.leases.v1.Leases",
} as const;

const VERSION_TIMEOUT_MS = 5_000;

/**
 * A typed containerd client. One HTTP/2 connection serves every service; `withNamespace` makes views that share it.
 * Errors are typed (errors.ts); an unreachable socket is an UnavailableError that says where we looked.
 */
export class ContainerdClient implements AsyncDisposable {
  readonly address: string;
  readonly namespace: string;
  readonly timeoutMs: number;
  readonly lease: string | undefined;
  readonly #transport: GrpcTransport;
  /** What every call of this view carries (made once, not per call). */
  readonly #scope: CallScope;
  readonly #ownsTransport: boolean;

  constructor(options: ContainerdClientOptions = {}, transport?: GrpcTransport) {
    this.address = options.address ?? process.env["CONTAINERD_ADDRESS"] ?? DEFAULT_ADDRESS;
    this.namespace = options.namespace ?? process.env["CONTAINERD_NAMESPACE"] ?? DEFAULT_NAMESPACE;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.lease = options.lease;
    this.#scope = { namespace: this.namespace, lease: this.lease };
    this.#ownsTransport = transport === undefined;
    this.#transport = transport ?? new GrpcTransport(this.address);
  }

  /** A client for another namespace on the same connection. Closing the view does not close it. */
  withNamespace(namespace: string): ContainerdClient {
    return new ContainerdClient({ address: this.address, namespace, timeoutMs: this.timeoutMs, lease: this.lease }, this.#transport);
  }

  /** A view whose calls carry a lease, so that what they make survives containerd's GC until the lease goes. */
  withLease(lease: string): ContainerdClient {
    return new ContainerdClient({ address: this.address, namespace: this.namespace, timeoutMs: this.timeoutMs, lease }, this.#transport);
  }

  #call<Res>(service: string, method: string, request: object, options?: CallOptions, timeoutMs?: number) {
    return this.#transport.unary<Res>(service, method, request, this.#scope, timeoutMs ?? this.timeoutMs, options);
  }

  /** The daemon's version; the cheapest way to learn that containerd answers. */
  version(options?: CallOptions): Promise<{ version: string; revision: string }> {
    return this.#call(S.version, "Version", {}, options, VERSION_TIMEOUT_MS);
  }

  readonly containers = {
    create: async (container: NewContainer, options?: CallOptions): Promise<ContainerRecord> =>
      (await this.#call<{ container: ContainerRecord }>(S.containers, "Create", { container }, options)).container,
    get: async (id: string, options?: CallOptions): Promise<ContainerRecord> =>
      (await this.#call<{ container: ContainerRecord }>(S.containers, "Get", { id }, options)).container,
    /** Filters use containerd's syntax, e.g. `labels."ctrexec.owner"==host`. */
    list: async (filters: string[] = [], options?: CallOptions): Promise<ContainerRecord[]> =>
      (await this.#call<{ containers: ContainerRecord[] }>(S.containers, "List", { filters }, options)).containers,
    delete: async (id: string, options?: CallOptions): Promise<void> => {
      await this.#call(S.containers, "Delete", { id }, options);
    },
  };

  readonly tasks = {
    create: (request: CreateTaskRequest, options?: CallOptions): Promise<{ containerId: string; pid: number }> =>
      this.#call(S.tasks, "Create", request, options),
    start: async (ref: ProcessRef, options?: CallOptions): Promise<number> =>
      (await this.#call<{ pid: number }>(S.tasks, "Start", ref, options)).pid,
    /** Blocks until the process exits: no deadline unless `timeoutMs` is given. */
    wait: (ref: ProcessRef, options?: CallOptions): Promise<ExitStatus> =>
      this.#call(S.tasks, "Wait", ref, options, 0),
    kill: async (request: KillRequest, options?: CallOptions): Promise<void> => {
      await this.#call(S.tasks, "Kill", request, options);
    },
    closeIO: async (ref: ProcessRef, options?: CallOptions): Promise<void> => {
      await this.#call(S.tasks, "CloseIO", { ...ref, stdin: true }, options);
    },
    resizePty: async (request: ResizePtyRequest, options?: CallOptions): Promise<void> => {
      await this.#call(S.tasks, "ResizePty", request, options);
    },
    exec: async (request: ExecProcessRequest, options?: CallOptions): Promise<void> => {
      await this.#call(S.tasks, "Exec", request, options);
    },
    /** Freezes every process of the task (cgroup freezer). */
    pause: async (containerId: string, options?: CallOptions): Promise<void> => {
      await this.#call(S.tasks, "Pause", { containerId }, options);
    },
    resume: async (containerId: string, options?: CallOptions): Promise<void> => {
      await this.#call(S.tasks, "Resume", { containerId }, options);
    },
    get: async (ref: ProcessRef, options?: CallOptions): Promise<ProcessState> =>
      (await this.#call<{ process: ProcessState }>(S.tasks, "Get", ref, options)).process,
    list: async (filter = "", options?: CallOptions): Promise<ProcessState[]> =>
      (await this.#call<{ tasks: ProcessState[] }>(S.tasks, "List", { filter }, options)).tasks,
    listPids: async (containerId: string, options?: CallOptions): Promise<number[]> =>
      (await this.#call<{ processes: { pid: number }[] }>(S.tasks, "ListPids", { containerId }, options)).processes.map(
        (p) => p.pid,
      ),
    delete: (containerId: string, options?: CallOptions): Promise<DeleteResponse> =>
      this.#call(S.tasks, "Delete", { containerId }, options),
    deleteProcess: (ref: Required<ProcessRef>, options?: CallOptions): Promise<DeleteResponse> =>
      this.#call(S.tasks, "DeleteProcess", ref, options),
  };

  readonly events = {
    /**
     * Events as they happen. containerd sends every namespace's events unless filtered, so this adds
     * `namespace==<ns>` to each filter (pass `allNamespaces` to see all).
     */
    subscribe: (
      filters: string[] = [],
      options?: CallOptions & { allNamespaces?: boolean },
    ): AsyncIterable<Envelope> => {
      const scoped = options?.allNamespaces
        ? filters
        : filters.length === 0
          ? [`namespace==${this.namespace}`]
          : filters.map((f) => `namespace==${this.namespace},${f}`);
      const stream = this.#transport.serverStream<RawEnvelope>(S.events, "Subscribe", { filters: scoped }, {}, {
        signal: options?.signal,
        background: options?.background,
      });
      return mapStream(stream, decodeEnvelope);
    },
  };

  readonly introspection = {
    plugins: async (filters: string[] = [], options?: CallOptions): Promise<PluginInfo[]> =>
      (await this.#call<{ plugins: PluginInfo[] }>(S.introspection, "Plugins", { filters }, options)).plugins,
    server: (options?: CallOptions): Promise<{ uuid: string }> => this.#call(S.introspection, "Server", {}, options),
  };

  readonly namespaces = {
    list: async (options?: CallOptions): Promise<string[]> =>
      (await this.#call<{ namespaces: { name: string }[] }>(S.namespaces, "List", {}, options)).namespaces.map(
        (n) => n.name,
      ),
    create: async (name: string, labels: Record<string, string> = {}, options?: CallOptions): Promise<void> => {
      await this.#call(S.namespaces, "Create", { namespace: { name, labels } }, options);
    },
    /** Fails with FailedPreconditionError while the namespace still holds containers, images or snapshots. */
    delete: async (name: string, options?: CallOptions): Promise<void> => {
      await this.#call(S.namespaces, "Delete", { name }, options);
    },
  };

  readonly snapshots = {
    prepare: async (
      req: { snapshotter: string; key: string; parent?: string; labels?: Record<string, string> },
      options?: CallOptions,
    ): Promise<Mount[]> => (await this.#call<{ mounts: Mount[] }>(S.snapshots, "Prepare", req, options)).mounts,
    view: async (
      req: { snapshotter: string; key: string; parent?: string; labels?: Record<string, string> },
      options?: CallOptions,
    ): Promise<Mount[]> => (await this.#call<{ mounts: Mount[] }>(S.snapshots, "View", req, options)).mounts,
    mounts: async (req: { snapshotter: string; key: string }, options?: CallOptions): Promise<Mount[]> =>
      (await this.#call<{ mounts: Mount[] }>(S.snapshots, "Mounts", req, options)).mounts,
    commit: async (
      req: { snapshotter: string; name: string; key: string; labels?: Record<string, string> },
      options?: CallOptions,
    ): Promise<void> => {
      await this.#call(S.snapshots, "Commit", req, options);
    },
    remove: async (req: { snapshotter: string; key: string }, options?: CallOptions): Promise<void> => {
      await this.#call(S.snapshots, "Remove", req, options);
    },
    stat: async (req: { snapshotter: string; key: string }, options?: CallOptions): Promise<SnapshotInfo> =>
      (await this.#call<{ info: SnapshotInfo }>(S.snapshots, "Stat", req, options)).info,
    list: async (snapshotter: string, filters: string[] = [], options?: CallOptions): Promise<SnapshotInfo[]> => {
      const out: SnapshotInfo[] = [];
      const stream = this.#transport.serverStream<{ info: SnapshotInfo[] }>(
        S.snapshots,
        "List",
        { snapshotter, filters },
        this.#scope,
        { signal: options?.signal, timeoutMs: options?.timeoutMs ?? this.timeoutMs },
      );
      for await (const page of stream) out.push(...page.info);
      return out;
    },
  };

  readonly images = {
    get: async (name: string, options?: CallOptions): Promise<ImageRecord> =>
      (await this.#call<{ image: ImageRecord }>(S.images, "Get", { name }, options)).image,
    list: async (filters: string[] = [], options?: CallOptions): Promise<ImageRecord[]> =>
      (await this.#call<{ images: ImageRecord[] }>(S.images, "List", { filters }, options)).images,
  };

  readonly content = {
    info: async (digest: string, options?: CallOptions): Promise<{ digest: string; size: number; labels: Record<string, string> }> =>
      (await this.#call<{ info: { digest: string; size: number; labels: Record<string, string> } }>(S.content, "Info", { digest }, options)).info,
    /** Sets labels on a blob (only the named label keys are touched). */
    setLabels: async (digest: string, labels: Record<string, string>, options?: CallOptions): Promise<void> => {
      await this.#call(
        S.content,
        "Update",
        { info: { digest, labels }, updateMask: { paths: Object.keys(labels).map((k) => `labels.${k}`) } },
        options,
      );
    },
    /** The whole blob (for manifests and configs: small). */
    read: async (digest: string, options?: CallOptions): Promise<Buffer> => {
      const parts: Buffer[] = [];
      const stream = this.#transport.serverStream<{ data: Uint8Array }>(S.content, "Read", { digest }, this.#scope, {
        signal: options?.signal,
        timeoutMs: options?.timeoutMs ?? this.timeoutMs,
      });
      for await (const chunk of stream) parts.push(Buffer.from(chunk.data));
      return Buffer.concat(parts);
    },
  };

  readonly diff = {
    /** Applies a layer (by its descriptor, from the content store) onto the given mounts. */
    apply: async (diff: Descriptor, mounts: Mount[], options?: CallOptions): Promise<Descriptor> =>
      (await this.#call<{ applied: Descriptor }>(S.diff, "Apply", { diff, mounts }, options)).applied,
  };

  readonly leases = {
    create: async (id: string, labels: Record<string, string> = {}, options?: CallOptions): Promise<void> => {
      await this.#call(S.leases, "Create", { id, labels }, options);
    },
    delete: async (id: string, options?: CallOptions & { sync?: boolean }): Promise<void> => {
      await this.#call(S.leases, "Delete", { id, sync: options?.sync ?? false }, options);
    },
    list: async (filters: string[] = [], options?: CallOptions): Promise<{ id: string; labels: Record<string, string> }[]> =>
      (await this.#call<{ leases: { id: string; labels: Record<string, string> }[] }>(S.leases, "List", { filters }, options)).leases,
  };

  /** Releases the connection (only the client that made it owns it). Idempotent. */
  async close(): Promise<void> {
    if (this.#ownsTransport) this.#transport.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

interface RawEnvelope {
  timestamp: Envelope["timestamp"];
  namespace: string;
  topic: string;
  event: { typeUrl: string; value: Uint8Array } | null;
}

function decodeEnvelope(raw: RawEnvelope): Envelope {
  const typeUrl = raw.event?.typeUrl ?? "";
  // Event type URLs are the message's full name with no host part, e.g. "containerd.events.TaskExit".
  const typeName = typeUrl.slice(typeUrl.lastIndexOf("/") + 1);
  let event: TaskEvent | null = null;
  if (raw.event && typeName.startsWith("containerd.events.") && hasType(typeName)) {
    const decoded = codec(typeName).decode(raw.event.value) as Record<string, unknown>;
    event = { type: typeName.slice("containerd.events.".length), ...decoded } as TaskEvent;
  }
  return { timestamp: raw.timestamp, namespace: raw.namespace, topic: raw.topic, event, eventType: typeName };
}

async function* mapStream<A, B>(source: AsyncGenerator<A, void, undefined>, f: (a: A) => B): AsyncGenerator<B> {
  for await (const a of source) yield f(a);
}
