/**
 * A scripted registry for tests, for what a real registry will not do on demand: serve a wrong digest or a
 * truncated blob, fail with 503 (or 429 + Retry-After) before succeeding, redirect blobs to another origin
 * (a "blob store" server that records the headers it gets, so a test can assert it saw no Authorization),
 * stall before the headers or mid-body, ask for Basic or Bearer auth (with a token server on its own port),
 * and revoke tokens. It speaks enough of the distribution API (GET /v2/, manifests, blobs) for the registry
 * client and a whole pull. Every server listens on 127.0.0.1 only.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { readFile, writeFile } from "node:fs/promises";
import http, { type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The queue key of the token service's behaviours (not a path the registry serves). */
const TOKEN_QUEUE = " token";
/** The queue key of the blob store's behaviours. */
const STORE_QUEUE = " store";

export const MEDIA = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerSchema1: "application/vnd.docker.distribution.manifest.v1+prettyjws",
} as const;

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export interface FakeDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  urls?: string[];
}

/**
 * What a path does instead of (or before) being served normally. Queued per path and used in order; each
 * entry applies `times` times (default: every time from then on).
 */
export type Behaviour =
  /**
   * Answer with this status (and headers/body) instead: 503, 500, 429 with `retry-after`... With `stallBody`,
   * the headers (with the body's Content-Length) go out and the body never does, until the test ends.
   */
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string; stallBody?: boolean }
  /** The right length, one byte changed. */
  | { kind: "wrong-digest" }
  /** Send `after` bytes, then close the connection ("close", Content-Length says the full size) or end cleanly with a Content-Length of `after` ("short"). */
  | { kind: "truncate"; after: number; mode?: "close" | "short" }
  /** Send nothing (no headers) or, with `after`, that many bytes of body; then hold the connection open until the test ends it. */
  | { kind: "stall"; after?: number }
  /** 307 to the blob store (another origin), which serves the same bytes and records what it was sent. */
  | { kind: "redirect" }
  /** 307 to another path of this same registry (same origin: credentials may follow). */
  | { kind: "redirect-same" }
  /** 307 to any Location. */
  | { kind: "redirect-to"; location: string }
  /** Serve normally but with these headers changed (`null` removes one). */
  | { kind: "headers"; headers: Record<string, string | null> };

export type FakeAuth =
  | { kind: "basic"; username: string; password: string }
  | {
      kind: "bearer";
      /** A user the token server accepts; without one, only anonymous tokens. */
      username?: string;
      password?: string;
      /** Whether an anonymous token may pull (default: no; it gets a token without rights, as Docker Hub does). */
      anonymousPull?: boolean;
      /** expires_in of the tokens; omitted from the answer when undefined. */
      expiresIn?: number;
      /** Answer with access_token instead of token (the OAuth2 spelling). */
      accessTokenField?: boolean;
    };

export interface RecordedRequest {
  method: string;
  /** Path and query. */
  url: string;
  headers: IncomingHttpHeaders;
  /** The client's port: which connection the request came on. */
  remote: number;
}

export interface FakeRegistryOptions {
  auth?: FakeAuth;
  /** Serve HTTPS with this key and certificate (see makeTestCertificates). */
  tls?: { key: string | Buffer; cert: string | Buffer };
}

interface Repo {
  blobs: Map<string, Buffer>;
  manifests: Map<string, { body: Buffer; mediaType: string }>;
  tags: Map<string, string>;
}

interface Queued {
  behaviour: Behaviour;
  left: number;
}

/** A plain HTTP server on 127.0.0.1 that records requests and can be closed with everything it holds open. */
class RecordingServer extends EventEmitter {
  readonly requests: RecordedRequest[] = [];
  /** Connections that sent no HTTP (a TLS hello to a plain-HTTP server, say). */
  clientErrors = 0;
  readonly server: Server;
  port = 0;
  readonly #scheme: string;

  constructor(handler: (req: IncomingMessage, res: ServerResponse) => void, tls?: { key: string | Buffer; cert: string | Buffer }) {
    super();
    this.#scheme = tls ? "https" : "http";
    const record = (req: IncomingMessage, res: ServerResponse) => {
      const r: RecordedRequest = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, remote: req.socket.remotePort ?? 0 };
      this.requests.push(r);
      this.emit("request", r);
      handler(req, res);
    };
    this.server = tls ? https.createServer({ key: tls.key, cert: tls.cert }, record) : http.createServer(record);
    this.server.on("clientError", (_err, socket) => {
      this.clientErrors++;
      // What Node does without a listener: a 400, then close.
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `${this.#scheme}://${this.host}`;
  }

  /** Resolves with the first request (already made or still to come) that `match` accepts. */
  waitFor(match: (r: RecordedRequest) => boolean): Promise<RecordedRequest> {
    const seen = this.requests.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const on = (r: RecordedRequest) => {
        if (!match(r)) return;
        this.off("request", on);
        resolve(r);
      };
      this.on("request", on);
    });
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export class FakeRegistry {
  readonly registry: RecordingServer;
  /** Another origin (another port) that redirected blobs are served from. */
  readonly blobStore: RecordingServer;
  /** The Bearer token service (used only with auth.kind "bearer"). */
  readonly tokenServer: RecordingServer;
  readonly #repos = new Map<string, Repo>();
  readonly #queues = new Map<string, Queued[]>();
  readonly #auth: FakeAuth | undefined;
  /** Tokens issued and not revoked: token -> scopes it grants. */
  readonly #tokens = new Map<string, Set<string>>();
  /** Bytes the registry handed to its sockets, per blob digest (backpressure tests). */
  readonly sent = new Map<string, number>();
  /** Emits "blocked" (digest) when a blob response waits for the client to read. */
  readonly events = new EventEmitter();

  private constructor(options: FakeRegistryOptions) {
    this.#auth = options.auth;
    this.registry = new RecordingServer((q, s) => this.#handle(q, s), options.tls);
    this.blobStore = new RecordingServer((q, s) => this.#handleBlobStore(q, s));
    this.tokenServer = new RecordingServer((q, s) => this.#handleToken(q, s));
  }

  static async start(options: FakeRegistryOptions = {}): Promise<FakeRegistry> {
    const f = new FakeRegistry(options);
    await Promise.all([f.registry.listen(), f.blobStore.listen(), f.tokenServer.listen()]);
    return f;
  }

  /** "127.0.0.1:PORT": the domain of a reference to this registry. */
  get host(): string {
    return this.registry.host;
  }

  get requests(): RecordedRequest[] {
    return this.registry.requests;
  }

  async close(): Promise<void> {
    await Promise.all([this.registry.close(), this.blobStore.close(), this.tokenServer.close()]);
  }

  // ---- content ----

  #repo(name: string): Repo {
    let r = this.#repos.get(name);
    if (!r) {
      r = { blobs: new Map(), manifests: new Map(), tags: new Map() };
      this.#repos.set(name, r);
    }
    return r;
  }

  putBlob(repo: string, data: Buffer | string, mediaType: string = MEDIA.ociLayerGzip): FakeDescriptor {
    const bytes = Buffer.from(data);
    const digest = sha256(bytes);
    this.#repo(repo).blobs.set(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  }

  /** Stores a manifest or index (an object is serialized), tagged `tag` when given. */
  putManifest(repo: string, body: Buffer | string | object, mediaType: string, tag?: string): FakeDescriptor {
    const bytes = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
    const digest = sha256(bytes);
    const r = this.#repo(repo);
    r.manifests.set(digest, { body: bytes, mediaType });
    if (tag !== undefined) r.tags.set(tag, digest);
    return { mediaType, digest, size: bytes.length };
  }

  /**
   * An image: a config and a manifest per platform (one layer each from `layers`), under an index when
   * `platforms` is given (so an index "without this platform" is one whose platforms exclude the host's).
   */
  putImage(
    repo: string,
    tag: string,
    options: { layers: (Buffer | string)[]; platforms?: { os: string; architecture: string; variant?: string }[]; docker?: boolean },
  ): { index?: FakeDescriptor; manifests: FakeDescriptor[]; layers: FakeDescriptor[]; configs: FakeDescriptor[] } {
    const docker = options.docker === true;
    const layers = options.layers.map((l) => this.putBlob(repo, l, docker ? MEDIA.dockerLayer : MEDIA.ociLayerGzip));
    const one = (platform: { os: string; architecture: string; variant?: string }, t: string | undefined) => {
      const config = this.putBlob(
        repo,
        JSON.stringify({ ...platform, rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) }, config: {} }),
        docker ? MEDIA.dockerConfig : MEDIA.ociConfig,
      );
      const mediaType = docker ? MEDIA.dockerManifest : MEDIA.ociManifest;
      const manifest = this.putManifest(repo, { schemaVersion: 2, mediaType, config, layers }, mediaType, t);
      return { config, manifest: { ...manifest, platform } };
    };
    if (options.platforms === undefined) {
      const { config, manifest } = one({ os: "linux", architecture: "amd64" }, tag);
      const { platform: _, ...plain } = manifest;
      return { manifests: [plain], layers, configs: [config] };
    }
    const built = options.platforms.map((p) => one(p, undefined));
    const mediaType = docker ? MEDIA.dockerList : MEDIA.ociIndex;
    const index = this.putManifest(repo, { schemaVersion: 2, mediaType, manifests: built.map((b) => b.manifest) }, mediaType, tag);
    return { index, manifests: built.map((b) => b.manifest), layers, configs: built.map((b) => b.config) };
  }

  // ---- behaviours ----

  /** Scripts `path` (as requested, e.g. blobPath(repo, digest)). */
  on(path: string, behaviour: Behaviour, times = Number.POSITIVE_INFINITY): this {
    const q = this.#queues.get(path) ?? [];
    q.push({ behaviour, left: times });
    this.#queues.set(path, q);
    return this;
  }

  #next(path: string): Behaviour | undefined {
    const q = this.#queues.get(path);
    const head = q?.[0];
    if (!q || !head) return undefined;
    head.left--;
    if (head.left <= 0) q.shift();
    return head.behaviour;
  }

  /** Scripts the token service (only "status" and "stall" apply there). */
  onToken(behaviour: Behaviour, times = Number.POSITIVE_INFINITY): this {
    return this.on(TOKEN_QUEUE, behaviour, times);
  }

  /**
   * Scripts the blob store, for every path it is asked (only "status" applies there): object storage that
   * refuses a download, with a challenge of its own in `headers` if the test wants one.
   */
  onBlobStore(behaviour: Extract<Behaviour, { kind: "status" }>, times = Number.POSITIVE_INFINITY): this {
    return this.on(STORE_QUEUE, behaviour, times);
  }

  /** Forgets every token issued so far: the registry answers 401 invalid_token to them, as after expiry. */
  revokeTokens(): void {
    this.#tokens.clear();
  }

  // ---- handlers ----

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://x");
    const path = url.pathname;
    if (path === "/v2/" || path === "/v2") {
      if (!this.#authorized(req, res, undefined)) return;
      this.#apply(req, res, path, Buffer.from("{}"), { "content-type": "application/json" }, undefined);
      return;
    }
    if (path.startsWith("/_moved/")) {
      // The target of a same-origin redirect: the blob named after the prefix.
      const [, repo, digest] = /^\/_moved\/(.+)\/(sha256:[a-f0-9]{64})$/.exec(path) ?? [];
      if (!this.#authorized(req, res, repo)) return;
      const blob = repo && digest ? this.#repos.get(repo)?.blobs.get(digest) : undefined;
      if (!blob) {
        this.#error(res, 404, "BLOB_UNKNOWN", "blob unknown");
        return;
      }
      this.#send(res, blob, { "content-type": "application/octet-stream" }, digest);
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (!m) {
      this.#error(res, 404, "UNSUPPORTED", "not a registry path");
      return;
    }
    const [, name, kind, ref] = m as unknown as [string, string, string, string];
    if (!this.#authorized(req, res, name)) return;
    const repo = this.#repos.get(name);
    if (!repo) {
      this.#error(res, 404, "NAME_UNKNOWN", "repository name not known to registry");
      return;
    }
    if (kind === "manifests") {
      const digest = ref.startsWith("sha256:") ? ref : repo.tags.get(ref);
      const manifest = digest ? repo.manifests.get(digest) : undefined;
      if (!digest || !manifest) {
        this.#error(res, 404, "MANIFEST_UNKNOWN", "manifest unknown");
        return;
      }
      this.#apply(req, res, path, manifest.body, { "content-type": manifest.mediaType, "docker-content-digest": digest }, digest, name);
      return;
    }
    const blob = repo.blobs.get(ref);
    if (!blob) {
      this.#error(res, 404, "BLOB_UNKNOWN", "blob unknown to registry");
      return;
    }
    this.#apply(req, res, path, blob, { "content-type": "application/octet-stream", "docker-content-digest": ref }, ref, name);
  }

  #apply(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    body: Buffer,
    headers: Record<string, string>,
    digest: string | undefined,
    repo?: string,
  ): void {
    const b = this.#next(path);
    if (b === undefined) {
      this.#send(res, body, headers, digest, req.method === "HEAD");
      return;
    }
    switch (b.kind) {
      case "status": {
        const text = b.body ?? JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: `scripted ${b.status}` }] });
        if (b.stallBody) {
          res.writeHead(b.status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), ...b.headers });
          res.flushHeaders();
          return; // held open until close()
        }
        res.writeHead(b.status, { "content-type": "application/json", ...b.headers });
        res.end(text);
        return;
      }
      case "wrong-digest": {
        const wrong = Buffer.from(body);
        if (wrong.length > 0) wrong[wrong.length - 1] = wrong[wrong.length - 1]! ^ 0xff;
        this.#send(res, wrong, headers, digest);
        return;
      }
      case "truncate":
        if (b.mode === "short") {
          res.writeHead(200, { ...headers, "content-length": String(b.after) });
          res.end(body.subarray(0, b.after));
          return;
        }
        res.writeHead(200, { ...headers, "content-length": String(body.length) });
        res.write(body.subarray(0, b.after), () => res.destroy());
        return;
      case "stall":
        if (b.after !== undefined) {
          res.writeHead(200, { ...headers, "content-length": String(body.length) });
          res.write(body.subarray(0, b.after));
        }
        return; // held open until close()
      case "redirect":
        res.writeHead(307, { location: `${this.blobStore.url}/blob/${repo}/${digest}?signature=abc` });
        res.end();
        return;
      case "redirect-same":
        res.writeHead(307, { location: `/_moved/${repo}/${digest}` });
        res.end();
        return;
      case "redirect-to":
        res.writeHead(307, { location: b.location });
        res.end();
        return;
      case "headers": {
        const h: Record<string, string> = { ...headers };
        for (const [k, v] of Object.entries(b.headers)) {
          if (v === null) delete h[k];
          else h[k] = v;
        }
        this.#send(res, body, h, digest);
        return;
      }
    }
  }

  /** Writes the body in 64 KiB pieces, waiting for 'drain' like any well-behaved server, and counts what it handed over. */
  #send(res: ServerResponse, body: Buffer, headers: Record<string, string>, digest: string | undefined, head = false): void {
    res.writeHead(200, { ...headers, "content-length": String(body.length) });
    if (head) {
      res.end();
      return;
    }
    let offset = 0;
    const pump = () => {
      while (offset < body.length) {
        const piece = body.subarray(offset, offset + 65536);
        offset += piece.length;
        if (digest) this.sent.set(digest, (this.sent.get(digest) ?? 0) + piece.length);
        if (!res.write(piece)) {
          this.events.emit("blocked", digest);
          res.once("drain", pump);
          return;
        }
      }
      res.end();
    };
    pump();
  }

  #error(res: ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ errors: [{ code, message }] }));
  }

  #handleBlobStore(req: IncomingMessage, res: ServerResponse): void {
    const scripted = this.#next(STORE_QUEUE);
    if (scripted?.kind === "status") {
      res.writeHead(scripted.status, { "content-type": "text/plain", ...scripted.headers });
      res.end(scripted.body ?? "");
      return;
    }
    const m = /^\/blob\/(.+)\/(sha256:[a-f0-9]{64})/.exec(req.url ?? "");
    const blob = m ? this.#repos.get(m[1]!)?.blobs.get(m[2]!) : undefined;
    if (!blob) {
      res.writeHead(404);
      res.end("no such object");
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(blob.length) });
    res.end(blob);
  }

  // ---- auth ----

  #challenge(res: ServerResponse, repo: string | undefined, error?: string): void {
    const auth = this.#auth!;
    let value: string;
    if (auth.kind === "basic") value = 'Basic realm="fake-registry"';
    else {
      value = `Bearer realm="${this.tokenServer.url}/token",service="fake-registry"`;
      if (repo !== undefined) value += `,scope="repository:${repo}:pull"`;
      if (error) value += `,error="${error}"`;
    }
    res.writeHead(401, { "www-authenticate": value, "content-type": "application/json" });
    res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
  }

  /** Whether the request may go on; if not, the 401 has been sent. */
  #authorized(req: IncomingMessage, res: ServerResponse, repo: string | undefined): boolean {
    const auth = this.#auth;
    if (auth === undefined) return true;
    const given = req.headers.authorization;
    if (auth.kind === "basic") {
      const ok = given === `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`;
      if (!ok) this.#challenge(res, repo);
      return ok;
    }
    const token = given?.startsWith("Bearer ") ? given.slice(7) : undefined;
    const scopes = token === undefined ? undefined : this.#tokens.get(token);
    if (scopes === undefined) {
      this.#challenge(res, repo, token === undefined ? undefined : "invalid_token");
      return false;
    }
    if (repo !== undefined && !scopes.has(`repository:${repo}:pull`)) {
      this.#challenge(res, repo, "insufficient_scope");
      return false;
    }
    return true;
  }

  #handleToken(req: IncomingMessage, res: ServerResponse): void {
    const auth = this.#auth;
    const url = new URL(req.url ?? "/", "http://x");
    if (auth?.kind !== "bearer" || url.pathname !== "/token") {
      res.writeHead(404);
      res.end();
      return;
    }
    const scripted = this.#next(TOKEN_QUEUE);
    if (scripted?.kind === "stall") return; // held open until close()
    if (scripted?.kind === "status") {
      res.writeHead(scripted.status, { "content-type": "application/json", ...scripted.headers });
      res.end(scripted.body ?? "{}");
      return;
    }
    const given = req.headers.authorization;
    let user: string | undefined;
    if (given !== undefined) {
      const ok = auth.username !== undefined && given === `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`;
      if (!ok) {
        res.writeHead(401, { "content-type": "application/json" });
        res.end(JSON.stringify({ details: "incorrect username or password" }));
        return;
      }
      user = auth.username;
    }
    const granted = new Set(url.searchParams.getAll("scope").filter(() => user !== undefined || auth.anonymousPull === true));
    const token = randomBytes(12).toString("hex");
    this.#tokens.set(token, granted);
    const doc: Record<string, unknown> = { [auth.accessTokenField ? "access_token" : "token"]: token, issued_at: new Date().toISOString() };
    if (auth.expiresIn !== undefined) doc["expires_in"] = auth.expiresIn;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(doc));
  }
}

export function blobPath(repo: string, digest: string): string {
  return `/v2/${repo}/blobs/${digest}`;
}

export function manifestPath(repo: string, reference: string): string {
  return `/v2/${repo}/manifests/${reference}`;
}

export interface TestCertificates {
  caPem: string;
  caFile: string;
  keyPem: string;
  certPem: string;
}

/** A fresh CA and a server certificate it signed for 127.0.0.1 and localhost, made with the openssl CLI in `dir`. */
export async function makeTestCertificates(dir: string): Promise<TestCertificates> {
  const f = (n: string) => join(dir, n);
  const quiet = { timeout: 60_000 };
  await run(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      f("ca.key"),
      "-out",
      f("ca.pem"),
      "-days",
      "2",
      "-subj",
      "/CN=ctrexec test CA",
    ].concat(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    quiet,
  );
  await run(
    "openssl",
    ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=127.0.0.1"],
    quiet,
  );
  await writeFile(f("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
  await run(
    "openssl",
    [
      "x509",
      "-req",
      "-in",
      f("server.csr"),
      "-CA",
      f("ca.pem"),
      "-CAkey",
      f("ca.key"),
      "-CAcreateserial",
      "-out",
      f("server.pem"),
      "-days",
      "2",
      "-extfile",
      f("ext.cnf"),
    ],
    quiet,
  );
  return {
    caPem: await readFile(f("ca.pem"), "utf8"),
    caFile: f("ca.pem"),
    keyPem: await readFile(f("server.key"), "utf8"),
    certPem: await readFile(f("server.pem"), "utf8"),
  };
}
