/**
 * The registry client of one repository: resolve a tag or digest to its manifest, fetch manifests and configs
 * whole (verified), and layers as streams. It knows HTTP and the distribution API, nothing of containerd.
 */
import type { IncomingMessage } from "node:http";
import type { Readable } from "node:stream";
import {
  CanceledError,
  type CtrexecError,
  DataLossError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnknownError,
} from "../errors.js";
import { digestOf, isDigest } from "./digest.js";
import { plainHttpAllowed } from "./hosts.js";
import { ResponseBody, readBody, statusOf, TruncatedBodyError } from "./http.js";
import type { ImageReference } from "./reference.js";
import { printable, registryCodes, registryMessage } from "./registry-errors.js";
import { backoffMs } from "./retry.js";
import { type Budget, header, RegistrySession, resolveOptions } from "./session.js";
import { isManifestMediaType, MediaType, type RegistryDescriptor, type RegistryOptions } from "./types.js";

/** Manifests, indexes and configs are read whole; nothing legitimate comes near this. */
export const MAX_WHOLE_BYTES = 8 << 20;

const SUPPORTED = new Set<string>([MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerList, MediaType.dockerManifest]);
const SCHEMA1 = new Set<string>([MediaType.dockerSchema1, MediaType.dockerSchema1Signed]);
// Schema 1 is accepted only so that such an image is refused by name rather than with a 404.
const ACCEPT = [
  MediaType.ociIndex,
  MediaType.ociManifest,
  MediaType.dockerList,
  MediaType.dockerManifest,
  `${MediaType.dockerSchema1Signed};q=0.5`,
  `${MediaType.dockerSchema1};q=0.5`,
].join(", ");

function checkOptions(options: RegistryOptions | undefined): void {
  const positive = (v: number | undefined, field: string) => {
    if (v !== undefined && (!Number.isInteger(v) || v <= 0))
      throw new InvalidArgumentError(`${field} must be a positive integer, not ${v}`, { field });
  };
  positive(options?.idleTimeoutMs, "idleTimeoutMs");
  positive(options?.maxAttempts, "maxAttempts");
  const c = options?.credentials;
  if (c !== undefined && (typeof c.username !== "string" || c.username === "" || c.username.includes(":") || typeof c.password !== "string")) {
    throw new InvalidArgumentError("credentials need a username (without ':') and a password", { field: "credentials" });
  }
}

function checkDescriptor(desc: RegistryDescriptor): void {
  if (typeof desc?.digest !== "string" || !isDigest(desc.digest)) {
    throw new InvalidArgumentError(`descriptor digest ${JSON.stringify(desc?.digest)} is not a sha256/sha384/sha512 digest`, { field: "descriptor" });
  }
  if (!Number.isSafeInteger(desc.size) || desc.size < 0) {
    throw new InvalidArgumentError(`descriptor size ${desc.size} of ${desc.digest} is not a byte count`, { field: "descriptor" });
  }
}

export class RegistryClient {
  readonly reference: ImageReference;
  readonly #session: RegistrySession;
  readonly #scope: string;

  constructor(ref: ImageReference, options?: RegistryOptions) {
    checkOptions(options);
    this.reference = ref;
    this.#session = new RegistrySession(ref.domain, resolveOptions(options));
    this.#scope = `repository:${ref.repository}:pull`;
  }

  get #repo(): string {
    return `${this.reference.domain}/${this.reference.repository}`;
  }

  /**
   * The manifest or index `ref` names (its digest, else its tag). The descriptor's digest is the body's own
   * (a Docker-Content-Digest that disagrees is logged, not believed); a body that does not hash to the
   * reference's digest is DataLossError. Schema 1 and unknown media types are FailedPreconditionError.
   */
  async resolve(signal?: AbortSignal): Promise<{ descriptor: RegistryDescriptor; body: Buffer }> {
    const ref = this.reference;
    const target = ref.digest ?? ref.tag ?? "latest";
    const what = ref.digest !== undefined ? `manifest ${this.#repo}@${ref.digest}` : `${this.#repo}:${target}`;
    const { res, body } = await this.#whole(`/v2/${ref.repository}/manifests/${target}`, ACCEPT, what, undefined, signal, "manifest");
    const digest = digestOf(body, ref.digest);
    if (ref.digest !== undefined && digest !== ref.digest) {
      throw new DataLossError(`${what} from registry ${ref.domain} does not match its digest: its content hashes to ${digest}`);
    }
    const claimed = header(res, "docker-content-digest");
    if (claimed !== undefined && claimed !== digest && claimed.split(":")[0] === digest.split(":")[0]) {
      this.#session.options.logger.warn("registry's Docker-Content-Digest differs from the manifest's own digest: using the content's", {
        what,
        header: claimed,
        digest,
      });
    }
    const mediaType = manifestMediaType(header(res, "content-type"), body);
    if (mediaType === undefined || SCHEMA1.has(mediaType)) {
      if (mediaType !== undefined) {
        throw new FailedPreconditionError(
          `${what} is a Docker schema 1 manifest, which ctrexec does not pull (docker dropped it too): push the image again with a current docker, buildah or skopeo`,
        );
      }
      throw new FailedPreconditionError(`${what} is not an image manifest or index ctrexec knows (no media type in the response or the body)`);
    }
    if (!SUPPORTED.has(mediaType)) {
      throw new FailedPreconditionError(
        `${what} has media type ${printable(mediaType).slice(0, 200)}, which is not an image manifest or index ctrexec can pull`,
      );
    }
    return { descriptor: { mediaType, digest, size: body.length }, body };
  }

  /** A manifest, index or config, whole (at most 8 MiB), checked against the descriptor's size and digest. */
  async fetchBlobBytes(desc: RegistryDescriptor, signal?: AbortSignal): Promise<Buffer> {
    checkDescriptor(desc);
    const manifest = isManifestMediaType(desc.mediaType);
    const what = `${manifest ? "manifest" : "blob"} ${desc.digest} of ${this.#repo}`;
    if (desc.size > MAX_WHOLE_BYTES) {
      throw new FailedPreconditionError(
        `${what} is ${desc.size} bytes, more than the ${MAX_WHOLE_BYTES} ctrexec reads whole: it is not a usable manifest or config`,
      );
    }
    const path = `/v2/${this.reference.repository}/${manifest ? "manifests" : "blobs"}/${desc.digest}`;
    const accept = manifest ? `${desc.mediaType}, ${ACCEPT}` : undefined;
    const { body } = await this.#whole(path, accept, what, desc.size, signal, manifest ? "manifest" : "blob");
    const digest = digestOf(body, desc.digest);
    if (digest !== desc.digest)
      throw new DataLossError(`${what} from registry ${this.reference.domain} does not match its digest: its content hashes to ${digest}`);
    return body;
  }

  /**
   * A layer as a stream that reads the socket only as fast as it is consumed. Retries happen before the first
   * byte only; later failures are errors on the stream (UnavailableError when the registry goes silent,
   * DataLossError when the body is cut short or too long, CanceledError on `signal`). With `foreign`, the
   * descriptor's http(s) URLs are tried first, without credentials. The caller verifies the digest.
   */
  async fetchBlob(desc: RegistryDescriptor, options?: { signal?: AbortSignal; foreign?: boolean }): Promise<Readable> {
    checkDescriptor(desc);
    const signal = options?.signal;
    const session = this.#session;
    const { logger } = session.options;
    if (options?.foreign && desc.urls !== undefined) {
      for (const raw of desc.urls) {
        const url = foreignUrl(raw, session.options.insecureRegistries);
        if (url === undefined) {
          logger.warn("skipping a foreign layer URL ctrexec does not fetch (not https, or plain HTTP to a host that is not loopback or insecure)", {
            digest: desc.digest,
            url: raw,
          });
          continue;
        }
        const what = `foreign layer ${desc.digest} of ${this.#repo}`;
        try {
          const res = await session.getForeign(url, { what, signal });
          if (statusOf(res) === 200) return this.#body(res, desc, what, url.host, signal);
          logger.warn("foreign layer URL failed: trying the next", { digest: desc.digest, url: url.origin, status: statusOf(res) });
          res.destroy();
        } catch (err) {
          if (err instanceof CanceledError) throw err;
          logger.warn("foreign layer URL failed: trying the next", { digest: desc.digest, url: url.origin, error: err });
        }
      }
    }
    const what = `blob ${desc.digest} of ${this.#repo}`;
    const budget: Budget = { used: 0 };
    const res = await session.get(`/v2/${this.reference.repository}/blobs/${desc.digest}`, { scope: this.#scope, what, signal, budget });
    if (statusOf(res) !== 200) throw await this.#statusError(res, what, "blob", budget, signal);
    return this.#body(res, desc, what, `registry ${this.reference.domain}`, signal);
  }

  #body(res: IncomingMessage, desc: RegistryDescriptor, what: string, from: string, signal: AbortSignal | undefined): Readable {
    const length = header(res, "content-length");
    if (length !== undefined && Number(length) !== desc.size) {
      res.destroy();
      throw new DataLossError(`${what} from ${from} is ${printable(length).slice(0, 40)} bytes, but its descriptor says ${desc.size}`);
    }
    return new ResponseBody(res, { expected: desc.size, idleTimeoutMs: this.#session.options.idleTimeoutMs, signal, what, from });
  }

  /** GET and read a small body, retrying a body cut short or gone silent within the request's attempts. */
  async #whole(
    path: string,
    accept: string | undefined,
    what: string,
    expected: number | undefined,
    signal: AbortSignal | undefined,
    kind: "manifest" | "blob",
  ): Promise<{ res: IncomingMessage; body: Buffer }> {
    const session = this.#session;
    const { idleTimeoutMs, maxAttempts, sleep, logger } = session.options;
    const budget: Budget = { used: 0 };
    for (;;) {
      const opts = { scope: this.#scope, what, signal, budget, ...(accept === undefined ? {} : { accept }) };
      const res = await session.get(path, opts);
      if (statusOf(res) !== 200) throw await this.#statusError(res, what, kind, budget, signal);
      try {
        const limit = expected === undefined ? MAX_WHOLE_BYTES : undefined;
        const body = await readBody(res, {
          ...(expected === undefined ? {} : { expected }),
          ...(limit === undefined ? {} : { limit }),
          idleTimeoutMs,
          signal,
          what,
          from: `registry ${this.reference.domain}`,
        });
        return { res, body };
      } catch (err) {
        const transient = err instanceof TruncatedBodyError || err instanceof UnavailableError;
        if (!transient || budget.used >= maxAttempts) throw err;
        logger.debug("registry body failed: retrying", { what, error: err });
        await sleep(backoffMs(budget.used), signal);
      }
    }
  }

  /** A non-200 answer as the error that says what is missing or wrong. */
  async #statusError(
    res: IncomingMessage,
    what: string,
    kind: "manifest" | "blob",
    budget: Budget,
    signal: AbortSignal | undefined,
  ): Promise<CtrexecError> {
    const { idleTimeoutMs } = this.#session.options;
    const body = await readBody(res, { limit: 64 * 1024, idleTimeoutMs, signal, what: "an error", from: "registry" }).catch(() => Buffer.alloc(0));
    const message = registryMessage(body);
    const detail = message ? ` (${message})` : "";
    const domain = this.reference.domain;
    const ref = this.reference;
    if (statusOf(res) === 404) {
      const codes = registryCodes(body);
      if (codes.includes("NAME_UNKNOWN"))
        return new NotFoundError(`repository ${ref.repository} not found on registry ${domain}${detail}: check the name`);
      if (kind === "blob") return new NotFoundError(`${what} not found on registry ${domain}${detail}: the image is incomplete there; push it again`);
      if (what === `${this.#repo}:${ref.tag}` && ref.digest === undefined) {
        return new NotFoundError(`tag ${ref.tag} not found in ${this.#repo}${detail}: check the tag`);
      }
      return new NotFoundError(`${what} not found on registry ${domain}${detail}`);
    }
    const attempts = budget.used > 1 ? ` after ${budget.used} attempts` : "";
    if (statusOf(res) === 429) {
      const after = printable(header(res, "retry-after") ?? "").slice(0, 100);
      return new UnavailableError(
        `registry ${domain} is limiting requests (429${detail})${attempts}${after ? `, asking to wait ${after}` : ""}: wait and retry, or log in for a higher limit`,
      );
    }
    if (statusOf(res) >= 500)
      return new UnavailableError(`registry ${domain} answered ${statusOf(res)} for ${what}${detail}${attempts}: retry later`);
    return new UnknownError(`registry ${domain} answered ${statusOf(res)} for ${what}${detail}`);
  }
}

/** A foreign layer URL ctrexec may fetch: https, or http to a loopback or insecure host. */
function foreignUrl(raw: string, insecure: readonly string[]): URL | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if (url.protocol === "https:") return url;
  if (url.protocol === "http:" && plainHttpAllowed(url.host, insecure)) return url;
  return undefined;
}

/**
 * The manifest's media type: the Content-Type when it names a manifest type, else the body's own `mediaType`,
 * else what its shape says (registries behind some proxies answer application/json).
 */
export function manifestMediaType(contentType: string | undefined, body: Buffer): string | undefined {
  const type = contentType?.split(";")[0]?.trim().toLowerCase();
  if (type !== undefined && type !== "" && type !== "application/json" && type !== "text/plain" && type !== "application/octet-stream") return type;
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString("utf8"));
  } catch {
    return type || undefined;
  }
  if (typeof doc !== "object" || doc === null) return undefined;
  const d = doc as Record<string, unknown>;
  if (typeof d["mediaType"] === "string" && d["mediaType"] !== "") return d["mediaType"];
  if (d["schemaVersion"] === 1) return MediaType.dockerSchema1;
  if (Array.isArray(d["manifests"])) return MediaType.ociIndex;
  if (typeof d["config"] === "object" && Array.isArray(d["layers"])) return MediaType.ociManifest;
  return undefined;
}
