import type { DescMessage, DescMethodUnary, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { NotFoundError, UnknownError } from "../errors.js";
import type { ContentSource, ContentWriteOptions } from "./content-write.js";
import { type Loaded, services } from "./services.js";
import { type CallOptions, type CallScope, GrpcTransport } from "./transport.js";
import type {
  BlobInfo,
  ContainerRecord,
  CreateTaskRequest,
  DeleteResponse,
  Descriptor,
  Envelope,
  ExecProcessRequest,
  ExitStatus,
  ImageRecord,
  IngestStatus,
  KillRequest,
  LeaseInfo,
  LeaseResource,
  Mount,
  NewContainer,
  NewImage,
  PluginInfo,
  ProcessRef,
  ProcessState,
  ResizePtyRequest,
  SnapshotInfo,
} from "./types.js";

export type { ContentSource, ContentWriteOptions } from "./content-write.js";
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

const VERSION_TIMEOUT_MS = 5_000;
/** Content.Abort after a failed or canceled write: its own deadline, since the caller's signal may have fired. */
const ABORT_TIMEOUT_MS = 10_000;

const none = (): void => undefined;

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

  /**
   * A unary call: `load` gives the service (services.ts), `method` picks its generated method, `result` makes the
   * answer the client's data with the service's converters.
   */
  async #call<S extends DescService, C, I extends DescMessage, O extends DescMessage, T>(
    load: () => Promise<Loaded<S, C>>,
    method: (service: S) => DescMethodUnary<I, O>,
    request: NoInfer<MessageInitShape<I>>,
    result: (response: MessageShape<O>, to: C) => T,
    options?: CallOptions,
    timeoutMs?: number,
  ): Promise<T> {
    const { service, to } = await load();
    return result(await this.#transport.unary(method(service), request, this.#scope, timeoutMs ?? this.timeoutMs, options), to);
  }

  /** The daemon's version; the cheapest way to learn that containerd answers. */
  version(options?: CallOptions): Promise<{ version: string; revision: string }> {
    return this.#call(
      services.version,
      (s) => s.method.version,
      {},
      (r) => ({ version: r.version, revision: r.revision }),
      options,
      VERSION_TIMEOUT_MS,
    );
  }

  readonly containers = {
    create: (container: NewContainer, options?: CallOptions): Promise<ContainerRecord> =>
      this.#call(
        services.containers,
        (s) => s.method.create,
        { container },
        (r, to) => to.container(required(r.container, "Containers.Create")),
        options,
      ),
    get: (id: string, options?: CallOptions): Promise<ContainerRecord> =>
      this.#call(
        services.containers,
        (s) => s.method.get,
        { id },
        (r, to) => to.container(required(r.container, "Containers.Get")),
        options,
      ),
    /** Filters use containerd's syntax, e.g. `labels."ctrexec.owner"==host`. */
    list: (filters: string[] = [], options?: CallOptions): Promise<ContainerRecord[]> =>
      this.#call(
        services.containers,
        (s) => s.method.list,
        { filters },
        (r, to) => r.containers.map(to.container),
        options,
      ),
    delete: (id: string, options?: CallOptions): Promise<void> => this.#call(services.containers, (s) => s.method.delete, { id }, none, options),
  };

  readonly tasks = {
    create: (request: CreateTaskRequest, options?: CallOptions): Promise<{ containerId: string; pid: number }> =>
      this.#call(
        services.tasks,
        (s) => s.method.create,
        request,
        (r) => ({ containerId: r.containerId, pid: r.pid }),
        options,
      ),
    start: (ref: ProcessRef, options?: CallOptions): Promise<number> =>
      this.#call(
        services.tasks,
        (s) => s.method.start,
        ref,
        (r) => r.pid,
        options,
      ),
    /** Blocks until the process exits: no deadline unless `timeoutMs` is given. */
    wait: (ref: ProcessRef, options?: CallOptions): Promise<ExitStatus> =>
      this.#call(
        services.tasks,
        (s) => s.method.wait,
        ref,
        (r, to) => to.exitStatus(r),
        options,
        0,
      ),
    kill: (request: KillRequest, options?: CallOptions): Promise<void> => this.#call(services.tasks, (s) => s.method.kill, request, none, options),
    closeIO: (ref: ProcessRef, options?: CallOptions): Promise<void> =>
      this.#call(services.tasks, (s) => s.method.closeIO, { ...ref, stdin: true }, none, options),
    resizePty: (request: ResizePtyRequest, options?: CallOptions): Promise<void> =>
      this.#call(services.tasks, (s) => s.method.resizePty, request, none, options),
    exec: (request: ExecProcessRequest, options?: CallOptions): Promise<void> =>
      this.#call(services.tasks, (s) => s.method.exec, request, none, options),
    /** Freezes every process of the task (cgroup freezer). */
    pause: (containerId: string, options?: CallOptions): Promise<void> =>
      this.#call(services.tasks, (s) => s.method.pause, { containerId }, none, options),
    resume: (containerId: string, options?: CallOptions): Promise<void> =>
      this.#call(services.tasks, (s) => s.method.resume, { containerId }, none, options),
    get: (ref: ProcessRef, options?: CallOptions): Promise<ProcessState> =>
      this.#call(
        services.tasks,
        (s) => s.method.get,
        ref,
        (r, to) => to.processState(required(r.process, "Tasks.Get")),
        options,
      ),
    list: (filter = "", options?: CallOptions): Promise<ProcessState[]> =>
      this.#call(
        services.tasks,
        (s) => s.method.list,
        { filter },
        (r, to) => r.tasks.map(to.processState),
        options,
      ),
    listPids: (containerId: string, options?: CallOptions): Promise<number[]> =>
      this.#call(
        services.tasks,
        (s) => s.method.listPids,
        { containerId },
        (r) => r.processes.map((x) => x.pid),
        options,
      ),
    delete: (containerId: string, options?: CallOptions): Promise<DeleteResponse> =>
      this.#call(
        services.tasks,
        (s) => s.method.delete,
        { containerId },
        (r, to) => to.deleteResponse(r),
        options,
      ),
    deleteProcess: (ref: Required<ProcessRef>, options?: CallOptions): Promise<DeleteResponse> =>
      this.#call(
        services.tasks,
        (s) => s.method.deleteProcess,
        ref,
        (r, to) => to.deleteResponse(r),
        options,
      ),
  };

  readonly events = {
    /**
     * Events as they happen. containerd sends every namespace's events unless filtered, so this adds
     * `namespace==<ns>` to each filter (pass `allNamespaces` to see all).
     */
    subscribe: (filters: string[] = [], options?: CallOptions & { allNamespaces?: boolean }): AsyncIterable<Envelope> => {
      const scoped = options?.allNamespaces
        ? filters
        : filters.length === 0
          ? [`namespace==${this.namespace}`]
          : filters.map((f) => `namespace==${this.namespace},${f}`);
      return this.#subscribe(scoped, { signal: options?.signal, background: options?.background });
    },
  };

  async *#subscribe(filters: string[], options: CallOptions): AsyncGenerator<Envelope> {
    const { service, to } = await services.events();
    for await (const raw of this.#transport.serverStream(service.method.subscribe, { filters }, {}, options)) yield to.envelope(raw);
  }

  readonly introspection = {
    plugins: (filters: string[] = [], options?: CallOptions): Promise<PluginInfo[]> =>
      this.#call(
        services.introspection,
        (s) => s.method.plugins,
        { filters },
        (r, to) => r.plugins.map(to.plugin),
        options,
      ),
    server: (options?: CallOptions): Promise<{ uuid: string }> =>
      this.#call(
        services.introspection,
        (s) => s.method.server,
        {},
        (r) => ({ uuid: r.uuid }),
        options,
      ),
  };

  readonly namespaces = {
    list: (options?: CallOptions): Promise<string[]> =>
      this.#call(
        services.namespaces,
        (s) => s.method.list,
        {},
        (r) => r.namespaces.map((n) => n.name),
        options,
      ),
    create: (name: string, labels: Record<string, string> = {}, options?: CallOptions): Promise<void> =>
      this.#call(services.namespaces, (s) => s.method.create, { namespace: { name, labels } }, none, options),
    /** Fails with FailedPreconditionError while the namespace still holds containers, images or snapshots. */
    delete: (name: string, options?: CallOptions): Promise<void> => this.#call(services.namespaces, (s) => s.method.delete, { name }, none, options),
  };

  readonly snapshots = {
    prepare: (req: SnapshotRequest, options?: CallOptions): Promise<Mount[]> =>
      this.#call(
        services.snapshots,
        (s) => s.method.prepare,
        req,
        (r, to) => r.mounts.map(to.mount),
        options,
      ),
    view: (req: SnapshotRequest, options?: CallOptions): Promise<Mount[]> =>
      this.#call(
        services.snapshots,
        (s) => s.method.view,
        req,
        (r, to) => r.mounts.map(to.mount),
        options,
      ),
    mounts: (req: { snapshotter: string; key: string }, options?: CallOptions): Promise<Mount[]> =>
      this.#call(
        services.snapshots,
        (s) => s.method.mounts,
        req,
        (r, to) => r.mounts.map(to.mount),
        options,
      ),
    commit: (req: { snapshotter: string; name: string; key: string; labels?: Record<string, string> }, options?: CallOptions): Promise<void> =>
      this.#call(services.snapshots, (s) => s.method.commit, req, none, options),
    remove: (req: { snapshotter: string; key: string }, options?: CallOptions): Promise<void> =>
      this.#call(services.snapshots, (s) => s.method.remove, req, none, options),
    stat: (req: { snapshotter: string; key: string }, options?: CallOptions): Promise<SnapshotInfo> =>
      this.#call(
        services.snapshots,
        (s) => s.method.stat,
        req,
        (r, to) => to.snapshotInfo(required(r.info, "Snapshots.Stat")),
        options,
      ),
    list: async (snapshotter: string, filters: string[] = [], options?: CallOptions): Promise<SnapshotInfo[]> => {
      const { service, to } = await services.snapshots();
      const out: SnapshotInfo[] = [];
      const stream = this.#transport.serverStream(service.method.list, { snapshotter, filters }, this.#scope, {
        signal: options?.signal,
        timeoutMs: options?.timeoutMs ?? this.timeoutMs,
      });
      for await (const page of stream) for (const info of page.info) out.push(to.snapshotInfo(info));
      return out;
    },
  };

  readonly images = {
    get: (name: string, options?: CallOptions): Promise<ImageRecord> =>
      this.#call(
        services.images,
        (s) => s.method.get,
        { name },
        (r, to) => to.image(required(r.image, "Images.Get")),
        options,
      ),
    list: (filters: string[] = [], options?: CallOptions): Promise<ImageRecord[]> =>
      this.#call(
        services.images,
        (s) => s.method.list,
        { filters },
        (r, to) => r.images.map(to.image),
        options,
      ),
    /** Fails with AlreadyExistsError when an image of that name exists. */
    create: async (image: NewImage, options?: CallOptions): Promise<ImageRecord> => {
      const { to } = await services.images();
      const record = { name: image.name, target: to.toDescriptor(image.target), labels: image.labels ?? {} };
      return this.#call(
        services.images,
        (s) => s.method.create,
        { image: record },
        (r) => to.image(required(r.image, "Images.Create")),
        options,
      );
    },
    /** Replaces the record, or only the named fields (`target`, `labels`, `labels.<key>`); NotFoundError if absent. */
    update: async (image: NewImage, fieldPaths: string[] = [], options?: CallOptions): Promise<ImageRecord> => {
      const { to } = await services.images();
      const record = { name: image.name, target: to.toDescriptor(image.target), labels: image.labels ?? {} };
      return this.#call(
        services.images,
        (s) => s.method.update,
        { image: record, ...(fieldPaths.length > 0 ? { updateMask: { paths: fieldPaths } } : {}) },
        (r) => to.image(required(r.image, "Images.Update")),
        options,
      );
    },
    /** `sync`: return after containerd's GC has collected what only this image held. */
    delete: (name: string, options?: CallOptions & { sync?: boolean }): Promise<void> =>
      this.#call(services.images, (s) => s.method.delete, { name, sync: options?.sync ?? false }, none, options),
  };

  readonly content = {
    info: (digest: string, options?: CallOptions): Promise<BlobInfo> =>
      this.#call(
        services.content,
        (s) => s.method.info,
        { digest },
        (r, to) => to.blobInfo(required(r.info, "Content.Info")),
        options,
      ),
    /** Sets labels on a blob (only the named label keys are touched). */
    setLabels: (digest: string, labels: Record<string, string>, options?: CallOptions): Promise<void> =>
      this.#call(
        services.content,
        (s) => s.method.update,
        { info: { digest, labels }, updateMask: { paths: Object.keys(labels).map((k) => `labels.${k}`) } },
        none,
        options,
      ),
    /** The whole blob (for manifests and configs: small). */
    read: async (digest: string, options?: CallOptions): Promise<Buffer> => {
      const { service } = await services.content();
      const parts: Buffer[] = [];
      const stream = this.#transport.serverStream(service.method.read, { digest }, this.#scope, {
        signal: options?.signal,
        timeoutMs: options?.timeoutMs ?? this.timeoutMs,
      });
      for await (const chunk of stream) parts.push(Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength));
      return Buffer.concat(parts);
    },
    /** Blobs in the namespace; filters in containerd's syntax, e.g. `labels."containerd.io/uncompressed"`. */
    list: async (filters: string[] = [], options?: CallOptions): Promise<BlobInfo[]> => {
      const { service, to } = await services.content();
      const out: BlobInfo[] = [];
      const stream = this.#transport.serverStream(service.method.list, { filters }, this.#scope, {
        signal: options?.signal,
        timeoutMs: options?.timeoutMs ?? this.timeoutMs,
      });
      for await (const page of stream) for (const info of page.info) out.push(to.blobInfo(info));
      return out;
    },
    delete: (digest: string, options?: CallOptions): Promise<void> => this.#call(services.content, (s) => s.method.delete, { digest }, none, options),
    /** Drops an ingest (a write not committed); NotFoundError when there is none under `ref`. */
    abort: (ref: string, options?: CallOptions): Promise<void> => this.#call(services.content, (s) => s.method.abort, { ref }, none, options),
    /** Ingests in progress or left behind (filters on `ref`, e.g. `ref~=^layer-`). */
    listStatuses: (filters: string[] = [], options?: CallOptions): Promise<IngestStatus[]> =>
      this.#call(
        services.content,
        (s) => s.method.listStatuses,
        { filters },
        (r, to) => r.statuses.map(to.ingestStatus),
        options,
      ),
    /**
     * Streams a blob into the content store under the ingest `ref` and commits it as `expected` (containerd checks
     * size and digest: a mismatch is a DataLossError). "exists" when the store already has the digest. The blob is
     * never held whole in memory; a failed or canceled write leaves no ingest. Under `withLease()` the lease holds
     * the ingest and the blob. containerd's silence for the client's `timeoutMs` while a request waits for its answer
     * is a DeadlineExceededError; the source itself has no deadline here (the caller's signal ends a stalled one).
     */
    write: async (
      ref: string,
      source: ContentSource,
      expected: { digest: string; size: number },
      options?: ContentWriteOptions,
    ): Promise<"written" | "exists"> => {
      const { service, writeContent } = await services.content();
      const deps = {
        open: (signal: AbortSignal) => this.#transport.requestStream(service.method.write, this.#scope, 0, { signal }),
        abort: async (r: string) => {
          await this.#transport.unary(service.method.abort, { ref: r }, this.#scope, ABORT_TIMEOUT_MS, undefined).catch((err: unknown) => {
            if (!(err instanceof NotFoundError)) throw err;
          });
        },
        offset: async (r: string) => {
          const statuses = await this.#transport.unary(service.method.listStatuses, {}, this.#scope, this.timeoutMs, undefined);
          const s = statuses.statuses.find((x) => x.ref === r);
          return s ? Number(s.offset) : undefined;
        },
        idleMs: this.timeoutMs > 0 ? this.timeoutMs : 60_000,
      };
      return writeContent(deps, ref, source, expected, options);
    },
  };

  readonly diff = {
    /** Applies a layer (by its descriptor, from the content store) onto the given mounts. */
    apply: async (diff: Descriptor, mounts: Mount[], options?: CallOptions): Promise<Descriptor> => {
      const { to } = await services.diff();
      return this.#call(
        services.diff,
        (s) => s.method.apply,
        { diff: to.toDescriptor(diff), mounts },
        (r) => to.descriptor(required(r.applied, "Diff.Apply")),
        options,
      );
    },
  };

  readonly leases = {
    create: (id: string, labels: Record<string, string> = {}, options?: CallOptions): Promise<void> =>
      this.#call(services.leases, (s) => s.method.create, { id, labels }, none, options),
    delete: (id: string, options?: CallOptions & { sync?: boolean }): Promise<void> =>
      this.#call(services.leases, (s) => s.method.delete, { id, sync: options?.sync ?? false }, none, options),
    list: (filters: string[] = [], options?: CallOptions): Promise<LeaseInfo[]> =>
      this.#call(
        services.leases,
        (s) => s.method.list,
        { filters },
        (r, to) => r.leases.map(to.lease),
        options,
      ),
    /** Makes the lease hold a resource that exists already (`type` "content", "ingests" or "snapshots/<snapshotter>"). */
    addResource: (lease: string, resource: LeaseResource, options?: CallOptions): Promise<void> =>
      this.#call(services.leases, (s) => s.method.addResource, { id: lease, resource }, none, options),
    listResources: (lease: string, options?: CallOptions): Promise<LeaseResource[]> =>
      this.#call(
        services.leases,
        (s) => s.method.listResources,
        { id: lease },
        (r, to) => r.resources.map(to.leaseResource),
        options,
      ),
  };

  /** Releases the connection (only the client that made it owns it). Idempotent. */
  async close(): Promise<void> {
    if (this.#ownsTransport) this.#transport.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** What Snapshots.Prepare and View take. */
type SnapshotRequest = { snapshotter: string; key: string; parent?: string; labels?: Record<string, string> };

/** A message field containerd always sets in this answer; its absence is a protocol error, not a null. */
function required<T>(value: T | undefined, method: string): T {
  if (value === undefined) throw new UnknownError(`containerd ${method} answered without the object it returns`);
  return value;
}
