import type { Readable } from "node:stream";
import type { ContainerdClient } from "../containerd/client.js";
import type { Descriptor } from "../containerd/types.js";
import {
  AlreadyExistsError,
  CanceledError,
  DataLossError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from "../errors.js";
import { MAX_WHOLE_BYTES, RegistryClient } from "../registry/client.js";
import { TruncatedBodyError } from "../registry/http.js";
import { type ImageReference, parseReference } from "../registry/reference.js";
import type { RegistryCredentials, RegistryDescriptor } from "../registry/types.js";
import { KeyedLimit } from "../util/keyed-limit.js";
import { type Logger, silentLogger } from "../util/logger.js";
import {
  type ConfigJson,
  checkManifest,
  DEFAULT_SNAPSHOTTER,
  type IndexJson,
  type ManifestJson,
  pickManifest,
  type ResolvedImage,
  resolvedImage,
} from "./image.js";
import { createLease, deleteLease } from "./lease.js";
import { childGcLabels, INDEX_TYPES, isForeignLayer, isLayerType } from "./media-types.js";
import { hostPlatform, type Platform, parsePlatform } from "./platform.js";
import { markUnpacked, snapshotExists, unpackLayer } from "./unpack.js";

/**
 * Pulls an image from a registry into containerd, as containerd's Go client does it (containerd 1.6 has no
 * server-side transfer service): resolve the reference, fetch the index, manifest, config and layers into the
 * content store, unpack the layers into the snapshotter as they arrive, and record the image. Everything is held by
 * a lease while it is written, so GC cannot take half a pull; the lease goes at the end either way, so a failed or
 * canceled pull leaves nothing referenced, and a finished one leaves what the image record references.
 */

export type PullPolicy = "missing" | "always" | "never";

/** What a pull reports as it goes, one event per blob state change (and per chunk while downloading). */
export interface PullProgress {
  /** The normalized reference being pulled (docker.io/library/alpine:latest). */
  name: string;
  /** The blob's digest; "" on the first event, while the reference is being resolved. */
  digest: string;
  kind: "index" | "manifest" | "config" | "layer";
  /**
   * resolving → (per blob) waiting → downloading* → verifying → [unpacking] → done; a blob already in the store
   * is `exists` (followed by unpacking → done when its snapshot is missing). Every blob ends in done or exists.
   */
  state: "resolving" | "waiting" | "downloading" | "verifying" | "unpacking" | "done" | "exists";
  /** Bytes so far, while downloading or verifying. */
  current?: number;
  /** The blob's size in bytes. */
  total?: number;
}

export interface PullOptions {
  /** `os/arch[/variant]` to pull from an index; default this host's. */
  platform?: string;
  /** Wins over the credentials in docker's config.json. */
  credentials?: RegistryCredentials;
  /** Registries (`host` or `host:port`) that may be reached over plain HTTP; loopback registries always may. */
  insecureRegistries?: readonly string[];
  /** Where docker's config.json is: default `$DOCKER_CONFIG`, else `~/.docker`. */
  dockerConfigDir?: string;
  /** PEM certificates of CAs trusted in addition to the system's. */
  caCerts?: readonly (string | Buffer)[];
  /** Fetch non-distributable ("foreign") layers from the URLs in their descriptors. Default false: the registry only. */
  allowForeignLayers?: boolean;
  /** Default overlayfs. */
  snapshotter?: string;
  /** Unpack the layers into the snapshotter (default true); false stores the content only. */
  unpack?: boolean;
  /** Layers fetched at once; default 3. */
  maxConcurrentDownloads?: number;
  onProgress?: (event: PullProgress) => void;
  signal?: AbortSignal;
  logger?: Logger;
}

/** containerd's limit on a label's key and value together. */
const MAX_LABEL_BYTES = 4096;

/** Retries of a layer whose download broke off after it began (the registry client retries before that). */
const LAYER_ATTEMPTS = 3;

type Emit = (event: Omit<PullProgress, "name">) => void;

/** A blob as the store has it. */
type BlobFound = { labels: Record<string, string>; size: number };

/** A manifest, index or config: its descriptor, its bytes, and what the store had of it when the pull looked. */
interface SmallBlob {
  desc: RegistryDescriptor;
  bytes: Buffer;
  have: BlobFound | undefined;
}

function canceled(signal: AbortSignal | undefined): CanceledError {
  return new CanceledError("image pull canceled", { cause: signal?.reason });
}

function throwIfCanceled(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw canceled(signal);
}

function parseJson<T>(body: Buffer, what: string, ref: string): T {
  try {
    return JSON.parse(body.toString("utf8")) as T;
  } catch (err) {
    throw new FailedPreconditionError(`image ${ref}: its ${what} is not valid JSON`, { cause: err });
  }
}

/** A descriptor as containerd stores it (no platform, no URLs). */
function toDescriptor(d: RegistryDescriptor | Descriptor): Descriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} };
}

function toRegistryDescriptor(d: Descriptor & { urls?: string[] }): RegistryDescriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: Number(d.size), ...(d.urls ? { urls: d.urls } : {}) };
}

/** containerd's ingest refs (remotes.MakeRefKey), so a pull by ctr and one by ctrexec share a blob's ingest. */
function refKey(kind: PullProgress["kind"], digest: string): string {
  return `${kind}-${digest}`;
}

/**
 * One pull: the registry, the leased containerd client, what it has written, and the progress sink. Its methods
 * are the steps of `pullImage`, in order.
 */
class Pull {
  readonly #sourceKey: string;
  readonly #sourceRepo: string;
  readonly #stop = new AbortController();
  /** The caller's signal, or the pull's own failure (which stops the downloads still running). */
  readonly signal: AbortSignal;

  constructor(
    readonly ref: ImageReference,
    readonly registry: RegistryClient,
    readonly client: ContainerdClient,
    readonly lease: string,
    readonly emit: Emit,
    readonly options: PullOptions,
  ) {
    this.signal = options.signal ? AbortSignal.any([options.signal, this.#stop.signal]) : this.#stop.signal;
    // containerd's AppendDistributionSourceLabel: the host without its port (url.Hostname(): no IPv6 brackets),
    // the repository as the value.
    const host = ref.domain.startsWith("[") ? ref.domain.slice(1, ref.domain.indexOf("]")) : ref.domain.replace(/:\d+$/, "");
    this.#sourceKey = `containerd.io/distribution.source.${host}`;
    this.#sourceRepo = ref.repository;
  }

  /** Stops what is still running after one step failed. */
  abort(reason: unknown): void {
    this.#stop.abort(reason);
  }

  /**
   * Adds a blob to the pull's lease, then looks it up in the store: a blob found is held from here on, so GC
   * cannot take it between this look and the image record.
   */
  async #look(digest: string): Promise<BlobFound | undefined> {
    await this.client.leases.addResource(this.lease, { id: digest, type: "content" }, { signal: this.signal });
    return this.#info(digest);
  }

  /** A blob's labels: its children's gc.ref labels, and where it came from (added to the sources it has). */
  #labels(have: BlobFound | undefined, digest: string, children: readonly { mediaType: string; digest: string }[]): Record<string, string> {
    const labels = childGcLabels(children);
    const sources = (have?.labels[this.#sourceKey] ?? "").split(",").filter(Boolean);
    const value = sources.includes(this.#sourceRepo) ? sources.join(",") : [...sources, this.#sourceRepo].join(",");
    // containerd refuses a label over 4096 bytes: like its own client, keep what is there rather than fail.
    if (this.#sourceKey.length + value.length <= MAX_LABEL_BYTES) labels[this.#sourceKey] = value;
    else this.options.logger?.debug("distribution source label full; not adding this repository", { digest });
    return labels;
  }

  async #info(digest: string): Promise<BlobFound | undefined> {
    return this.client.content.info(digest, { signal: this.signal }).catch((err: unknown) => {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    });
  }

  /**
   * Writes `source` as blob `desc` (size and digest verified by containerd at commit; content.write waits while
   * another writer holds the same ingest) and labels it. Returns whether it was there already.
   */
  async #write(
    kind: PullProgress["kind"],
    desc: RegistryDescriptor,
    source: () => Promise<Readable | Buffer>,
    labels: Record<string, string>,
    onProgress?: (written: number) => void,
  ): Promise<"written" | "exists"> {
    const body = await source();
    let result: "written" | "exists";
    try {
      result = await this.client.content.write(
        refKey(kind, desc.digest),
        Buffer.isBuffer(body) ? [body] : body,
        { digest: desc.digest, size: desc.size },
        { labels, signal: this.signal, ...(onProgress ? { onProgress } : {}) },
      );
    } finally {
      // A download the write did not finish reading (it failed, or found the blob there) is closed here; the
      // registry's body stream keeps its own error listener for what it reports after that.
      if (!Buffer.isBuffer(body)) body.destroy();
    }
    if (result === "exists") await this.#existing(desc.digest, labels);
    return result;
  }

  async #existing(digest: string, labels: Record<string, string>): Promise<void> {
    await this.client.content.setLabels(digest, labels, { signal: this.signal });
  }

  /**
   * A manifest, index or config: leased and looked up in the store once, its bytes as given (the top manifest
   * the registry resolved), from the store, or from the registry. Bounded and checked against the descriptor
   * either way: a manifest may name any blob (a large layer of the store) as its config, and that must not be
   * read into memory.
   */
  async small(desc: RegistryDescriptor, body?: Buffer): Promise<SmallBlob> {
    if (desc.size > MAX_WHOLE_BYTES) {
      throw new FailedPreconditionError(
        `image ${this.ref.name}: ${desc.digest} is ${desc.size} bytes, more than the ${MAX_WHOLE_BYTES} a manifest or config may be`,
      );
    }
    const have = await this.#look(desc.digest);
    if (have && have.size !== desc.size) {
      throw new DataLossError(`image ${this.ref.name}: ${desc.digest} is ${have.size} bytes in the store, but its descriptor says ${desc.size}`);
    }
    const bytes =
      body ?? (have ? await this.client.content.read(desc.digest, { signal: this.signal }) : await this.registry.fetchBlobBytes(desc, this.signal));
    return { desc, bytes, have };
  }

  /** Stores a small blob with its labels, or only labels it when it is there already. */
  async storeSmall(kind: PullProgress["kind"], blob: SmallBlob, children: readonly Descriptor[]): Promise<void> {
    const { desc } = blob;
    const labels = this.#labels(blob.have, desc.digest, children);
    const result = blob.have ? "exists" : await this.#write(kind, desc, async () => blob.bytes, labels);
    if (blob.have) await this.#existing(desc.digest, labels);
    this.emit({ digest: desc.digest, kind, state: result === "exists" ? "exists" : "done", total: desc.size });
  }

  /**
   * Downloads one layer into the content store (unless there), retrying a download that broke off.
   */
  async fetchLayer(desc: RegistryDescriptor): Promise<"written" | "exists"> {
    const have = await this.#look(desc.digest);
    const labels = this.#labels(have, desc.digest, []);
    if (have) {
      await this.#existing(desc.digest, labels);
      this.emit({ digest: desc.digest, kind: "layer", state: "exists", total: desc.size });
      return "exists";
    }
    for (let attempt = 1; ; attempt++) {
      throwIfCanceled(this.signal);
      this.emit({ digest: desc.digest, kind: "layer", state: "downloading", current: 0, total: desc.size });
      try {
        const foreign = this.options.allowForeignLayers === true && isForeignLayer(desc.mediaType);
        const result = await this.#write(
          "layer",
          desc,
          () => this.registry.fetchBlob(desc, { signal: this.signal, foreign }),
          labels,
          (written) => {
            this.emit({
              digest: desc.digest,
              kind: "layer",
              state: written >= desc.size ? "verifying" : "downloading",
              current: written,
              total: desc.size,
            });
          },
        );
        if (result === "exists") this.emit({ digest: desc.digest, kind: "layer", state: "exists", total: desc.size });
        return result;
      } catch (err) {
        const transient = err instanceof UnavailableError || err instanceof TruncatedBodyError;
        if (!transient || attempt >= LAYER_ATTEMPTS || this.signal.aborted) throw err;
        this.options.logger?.warn("layer download broke off; starting it again", { digest: desc.digest, attempt, error: err.message });
      }
    }
  }
}

/** Checks what `pullImage` is given before anything is created. */
function checkPullOptions(ref: string, options: PullOptions): { reference: ImageReference; platform: Platform } {
  const reference = parseReference(ref);
  const platform = options.platform !== undefined ? parsePlatform(options.platform) : hostPlatform();
  const n = options.maxConcurrentDownloads;
  if (n !== undefined && (!Number.isInteger(n) || n < 1)) {
    throw new InvalidArgumentError(`maxConcurrentDownloads must be a positive integer (got ${n})`, { field: "maxConcurrentDownloads" });
  }
  return { reference, platform };
}

/**
 * Pulls `ref` (`alpine`, `host:5000/name:tag`, `name@sha256:…`) into containerd: content, snapshots (unless
 * `unpack: false`) and an image record under the normalized name. Returns the resolved image, as `resolveImage`
 * does for an image already there.
 */
export async function pullImage(client: ContainerdClient, ref: string, options: PullOptions = {}): Promise<ResolvedImage> {
  const { reference, platform } = checkPullOptions(ref, options);
  const signal = options.signal;
  const logger = options.logger ?? silentLogger;
  throwIfCanceled(signal);
  const registry = new RegistryClient(reference, {
    ...(options.credentials ? { credentials: options.credentials } : {}),
    ...(options.insecureRegistries ? { insecureRegistries: options.insecureRegistries } : {}),
    ...(options.dockerConfigDir ? { dockerConfigDir: options.dockerConfigDir } : {}),
    ...(options.caCerts ? { caCerts: options.caCerts } : {}),
    logger,
  });
  let progressFailed = false;
  const emit: Emit = (event) => {
    if (!options.onProgress || progressFailed) return;
    try {
      options.onProgress({ name: reference.name, ...event });
    } catch (err) {
      // A progress display that throws must not break the pull it displays.
      progressFailed = true;
      logger.warn("onProgress threw; no more progress events for this pull", { error: String(err) });
    }
  };
  emit({ digest: "", kind: "manifest", state: "resolving" });
  const lease = await createLease(client, "pull");
  try {
    const pull = new Pull(reference, registry, client.withLease(lease), lease, emit, options);
    return await runPull(pull, platform);
  } finally {
    await deleteLease(client, lease).catch((err: unknown) =>
      logger.warn("could not delete the pull's lease; prune will", { lease, error: String(err) }),
    );
  }
}

async function runPull(pull: Pull, platform: Platform): Promise<ResolvedImage> {
  const { ref, registry, signal } = pull;
  const name = ref.name;
  const top = await registry.resolve(signal);
  throwIfCanceled(signal);
  const topDesc = top.descriptor;
  let current = await pull.small(topDesc, top.body);
  for (let depth = 0; INDEX_TYPES.has(current.desc.mediaType); depth++) {
    const index = parseJson<IndexJson>(current.bytes, "index", name);
    await pull.storeSmall("index", current, index.manifests ?? []);
    current = await pull.small(toRegistryDescriptor(pickManifest(name, index, platform, depth)));
  }
  const manifestBlob = current;
  const manifest = parseJson<ManifestJson>(manifestBlob.bytes, "manifest", name);
  const configDesc = checkManifest(name, manifest);
  const layers = manifest.layers ?? [];
  for (const layer of layers) {
    if (!isLayerType(layer.mediaType)) {
      throw new FailedPreconditionError(`image ${name}: layer ${layer.digest} has media type ${layer.mediaType}, which containerd cannot unpack`);
    }
  }
  const configBlob = await pull.small(toRegistryDescriptor(configDesc));
  const config = parseJson<ConfigJson>(configBlob.bytes, "config", name);
  // Checks the platform and the layer count against the diff IDs before a layer is fetched.
  const image = resolvedImage(name, toDescriptor(topDesc), toDescriptor(manifestBlob.desc), manifest, config, platform);
  await pull.storeSmall("config", configBlob, []);
  await pullLayers(pull, image);
  // The manifest last: its labels reference the config and layers, which are all in the store by now.
  await pull.storeSmall("manifest", manifestBlob, [configDesc, ...layers]);
  await recordImage(pull, name, image.target);
  return image;
}

/**
 * Fetches the layers (up to `maxConcurrentDownloads` at once) and unpacks each, in order, as soon as it and the
 * ones below it are in: unpacking overlaps the downloads, as containerd's unpacker does. Layers whose snapshot
 * already exists are neither fetched nor unpacked again. Returns only when nothing it started is still running.
 */
async function pullLayers(pull: Pull, image: ResolvedImage): Promise<void> {
  const { options, signal } = pull;
  const unpack = options.unpack !== false;
  const snapshotter = options.snapshotter ?? DEFAULT_SNAPSHOTTER;
  const layers = image.layers.map(toRegistryDescriptor);
  // The first layer whose snapshot is missing: everything below it is unpacked already.
  let first = 0;
  if (unpack) {
    for (let i = layers.length - 1; i >= 0; i--) {
      // Leased before it is looked at: a snapshot found stays (its parents are kept by it).
      await pull.client.leases.addResource(pull.lease, { id: image.chainIds[i]!, type: `snapshots/${snapshotter}` }, { signal });
      if (await snapshotExists(pull.client, snapshotter, image.chainIds[i]!, signal)) {
        first = i + 1;
        break;
      }
    }
    for (let i = 0; i < first; i++) {
      const layer = layers[i]!;
      pull.emit({ digest: layer.digest, kind: "layer", state: "exists", total: layer.size });
    }
  }
  const todo = layers.slice(first);
  for (const layer of todo) pull.emit({ digest: layer.digest, kind: "layer", state: "waiting", total: layer.size });
  const downloads = new KeyedLimit(options.maxConcurrentDownloads ?? 3);
  // The queue's places are taken here, synchronously and in layer order: the layers below, unpacked first, are
  // downloaded first.
  const fetches = todo.map((layer) => downloads.run("layer", () => pull.fetchLayer(layer)));
  // Every fetch is awaited below or here: none may outlive the pull (and its lease).
  const settled = Promise.allSettled(fetches);
  try {
    for (const [j, fetch] of fetches.entries()) {
      const i = first + j;
      const layer = layers[i]!;
      const fetched = await fetch;
      if (!unpack) {
        if (fetched === "written") pull.emit({ digest: layer.digest, kind: "layer", state: "done", total: layer.size });
        continue;
      }
      pull.emit({ digest: layer.digest, kind: "layer", state: "unpacking", total: layer.size });
      await unpackLayer(pull.client, image.layers[i]!, image.diffIds[i]!, image.chainIds[i]!, i > 0 ? image.chainIds[i - 1]! : "", {
        snapshotter,
        signal,
      });
      pull.emit({ digest: layer.digest, kind: "layer", state: "done", total: layer.size });
    }
  } catch (err) {
    // Stop the other downloads: the pull has failed.
    pull.abort(err);
    await settled;
    throw err;
  }
  if (unpack) await markUnpacked(pull.client, image, snapshotter, signal);
}

/** Creates the image record (a GC root for everything the pull wrote), or points an existing one at the new target. */
async function recordImage(pull: Pull, name: string, target: Descriptor): Promise<void> {
  const record = { name, target, labels: {} };
  try {
    await pull.client.images.create(record, { signal: pull.signal });
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err;
    await pull.client.images.update(record, ["target"], { signal: pull.signal });
  }
}

export type { RegistryCredentials };
