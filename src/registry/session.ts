/**
 * A registry host's requests: scheme (HTTPS, or plain HTTP where allowed), authentication (anonymous, then what
 * the registry's challenge asks for), redirects followed by hand so that credentials never leave the origin
 * they belong to, and bounded retries. Statuses other than 401/403 are returned for the caller to interpret.
 */
import type { IncomingMessage } from "node:http";
import { CanceledError, FailedPreconditionError, UnauthenticatedError, UnavailableError } from "../errors.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { type Challenge, parseChallenges } from "./challenge.js";
import { type CredentialLookup, lookupCredentials } from "./docker-config.js";
import { apiHost, plainHttpAllowed, splitHostPort } from "./hosts.js";
import { canceled, discard, readBody, send, speaksTls, statusOf, TransportFailure } from "./http.js";
import { registryMessage } from "./registry-errors.js";
import { backoffMs, retryAfterMs, sleepFor } from "./retry.js";
import { sharedTokens, TokenCache } from "./tokens.js";
import type { RegistryCredentials, RegistryOptions } from "./types.js";

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
/** A registry that asks for a longer pause than this is rate-limiting for real: failing now says so sooner. */
const MAX_RETRY_AFTER_MS = 30_000;
const USER_AGENT = "ctrexec";

/** Attempts used so far by one logical request (a body read that is retried counts against the same bound). */
export interface Budget {
  used: number;
}

export interface GetOptions {
  accept?: string;
  /** The token scope ("repository:x/y:pull"); undefined asks for none (a login check). */
  scope: string | undefined;
  /** "manifest x/y:t" — for messages. */
  what: string;
  signal: AbortSignal | undefined;
  budget?: Budget;
}

type Scheme = "https:" | "http:";

/** The scheme a request to the registry uses; `settle` is set for the one request whose TLS attempt decides it. */
interface SchemeTurn {
  scheme: Scheme;
  settle: ((scheme: Scheme | undefined) => void) | undefined;
}

type AuthMode = { kind: "basic" } | { kind: "bearer"; realm: string; service: string | undefined; scopes: string[] };

/** A response and where it came from: the last URL of its redirect chain, and whether that is the origin asked. */
interface Answer {
  res: IncomingMessage;
  url: URL;
  sameOrigin: boolean;
}

export interface ResolvedOptions {
  credentials: RegistryCredentials | undefined;
  insecureRegistries: readonly string[];
  dockerConfigDir: string | undefined;
  idleTimeoutMs: number;
  maxAttempts: number;
  logger: Logger;
  caCerts: readonly (string | Buffer)[] | undefined;
  sleep: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
  tokens: TokenCache;
  /**
   * The ports a registry domain without one is reached at. Always 443 and 80 but in tests, which cannot count
   * on binding those: the choice between them is tested on ports of their own.
   */
  defaultPorts: Readonly<Record<Scheme, number>>;
}

export function resolveOptions(options: RegistryOptions | undefined): ResolvedOptions {
  return {
    credentials: options?.credentials,
    insecureRegistries: options?.insecureRegistries ?? [],
    dockerConfigDir: options?.dockerConfigDir,
    idleTimeoutMs: options?.idleTimeoutMs ?? 30_000,
    maxAttempts: options?.maxAttempts ?? 4,
    logger: options?.logger ?? silentLogger,
    caCerts: options?.caCerts,
    sleep: options?.sleep ?? sleepFor,
    tokens: sharedTokens,
    defaultPorts: { "https:": 443, "http:": 80 },
  };
}

export class RegistrySession {
  /** The name users know the registry by ("docker.io"), for messages and config.json. */
  readonly domain: string;
  /** Where its API is ("registry-1.docker.io"). */
  readonly host: string;
  readonly options: ResolvedOptions;
  #auth: AuthMode | undefined;
  #lookup: Promise<CredentialLookup> | undefined;
  /**
   * How the registry is reached. HTTPS for a host that may not be reached over plain HTTP; for one that may
   * (loopback, insecureRegistries), undefined until its first TLS handshake settles it: HTTPS when it completes,
   * plain HTTP when the host does not speak TLS. Kept per session, not per process: a port that served plain
   * HTTP may serve TLS later (a test registry restarted), and the TLS attempt costs one round trip per client.
   */
  #scheme: Scheme | undefined;
  /**
   * The TLS attempt that settles #scheme while it is undefined. Requests that start meanwhile wait for it rather
   * than each trying TLS: one decision per session, and no request fails on a handshake another one already
   * explained.
   */
  #probe: Promise<void> | undefined;

  constructor(domain: string, options: ResolvedOptions) {
    this.domain = domain;
    this.host = apiHost(domain);
    this.options = options;
    this.#scheme = this.#plainHttpAllowed ? undefined : "https:";
  }

  get #from(): string {
    return `registry ${this.domain}`;
  }

  get #plainHttpAllowed(): boolean {
    return plainHttpAllowed(this.host, this.options.insecureRegistries);
  }

  /** A path of the registry's API by `scheme`, at the port the domain names, else that scheme's default port. */
  #registryUrl(scheme: Scheme, path: string): URL {
    const url = new URL(path, `${scheme}//${this.host}`);
    // URL drops a scheme's standard port, so this changes nothing unless a test moved the defaults.
    if (url.port === "") url.port = String(this.options.defaultPorts[scheme]);
    return url;
  }

  /**
   * The scheme for the next request to the registry. While none is settled, the first caller gets HTTPS and
   * the `settle` that ends its probe; later callers wait for that probe (or their signal).
   */
  async #schemeTurn(signal: AbortSignal | undefined, what: string): Promise<SchemeTurn> {
    for (;;) {
      if (this.#scheme !== undefined) return { scheme: this.#scheme, settle: undefined };
      if (this.#probe === undefined) {
        let done: () => void = () => {};
        this.#probe = new Promise<void>((resolve) => {
          done = resolve;
        });
        let open = true;
        const settle = (scheme: Scheme | undefined): void => {
          if (!open) return;
          open = false;
          if (scheme !== undefined) this.#scheme = scheme;
          this.#probe = undefined;
          done();
        };
        // A handshake that trusts nothing answers "plain HTTP" without building the full CA context, which
        // costs more than a whole pull from a loopback registry; a host that speaks TLS is then tried for real.
        let tls: Awaited<ReturnType<typeof speaksTls>>;
        try {
          tls = await speaksTls(this.#registryUrl("https:", "/").host, this.options.idleTimeoutMs, signal);
        } catch (err) {
          // Requests waiting for this probe must not wait forever on one that threw.
          settle(undefined);
          throw err;
        }
        if (tls === "plain") {
          this.options.logger.debug("registry does not speak TLS: using plain HTTP", { registry: this.domain });
          settle("http:");
          return { scheme: "http:", settle: undefined };
        }
        // A domain without a port that refuses HTTPS may serve plain HTTP on port 80 (docker tries https, then
        // http, for such a registry). Only a connection there settles it: if nothing listens on either, the next
        // request asks both again.
        if (tls === "refused" && splitHostPort(this.host)[1] === undefined) {
          this.options.logger.debug("registry refuses HTTPS on its default port: trying plain HTTP", { registry: this.domain });
          return { scheme: "http:", settle };
        }
        return { scheme: "https:", settle };
      }
      await untilSettled(this.#probe, signal, what);
    }
  }

  /**
   * GET an API path of the registry, authenticated as its challenge asks. 401/403 become UnauthenticatedError
   * with what to do; everything else is returned as it came (after retries of 5xx/429).
   */
  async get(path: string, opts: GetOptions): Promise<IncomingMessage> {
    const budget = opts.budget ?? { used: 0 };
    let renewed = false;
    for (;;) {
      const { authorization, token, key } = await this.#authorization(opts.scope, opts.signal, opts.what);
      const headers: Record<string, string> = { "user-agent": USER_AGENT };
      if (opts.accept !== undefined) headers["accept"] = opts.accept;
      const { res, url, sameOrigin } = await this.#withRetries(budget, opts, path, headers, authorization);
      if (statusOf(res) !== 401 && statusOf(res) !== 403) return res;
      // A host the registry redirected to (object storage) is not the registry: it got no credentials, so its
      // refusal says nothing of them, and its challenge is not the registry's to follow: a realm it names would
      // collect the registry's password.
      if (!sameOrigin) throw storageRefused(url.host, statusOf(res), await this.#errorText(res, opts), opts.what, this.#from);
      const challenges = parseChallenges(res.headers["www-authenticate"]);
      const detail = await this.#errorText(res, opts);
      if (token !== undefined && key !== undefined) this.options.tokens.invalidate(key, token);
      // One renewal per request: the first 401 teaches the scheme (or replaces an expired token), a second is a refusal.
      if (statusOf(res) === 401 && !renewed && (await this.#learn(challenges, opts))) {
        renewed = true;
        continue;
      }
      throw await this.#refused(statusOf(res), opts, detail);
    }
  }

  /** GET a URL outside the registry (a foreign layer's): never with credentials; redirects and retries as for the registry. */
  async getForeign(url: URL, opts: Omit<GetOptions, "scope" | "accept">): Promise<IncomingMessage> {
    return (await this.#withRetries(opts.budget ?? { used: 0 }, opts, url, { "user-agent": USER_AGENT }, undefined)).res;
  }

  /** Credentials for this registry: the explicit ones, else config.json's (read once, when first needed). */
  async credentials(): Promise<CredentialLookup> {
    if (this.options.credentials !== undefined) return { credentials: this.options.credentials, path: "" };
    this.#lookup ??= lookupCredentials(this.domain, this.options.dockerConfigDir);
    return this.#lookup;
  }

  async #authorization(
    scope: string | undefined,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<{ authorization?: string; token?: string; key?: string }> {
    const auth = this.#auth;
    if (auth === undefined) return {};
    const { credentials } = await this.credentials();
    if (auth.kind === "basic") {
      return credentials ? { authorization: basic(credentials) } : {};
    }
    const scopes = [...new Set([...(scope === undefined ? [] : [scope]), ...auth.scopes])];
    const key = TokenCache.key(auth.realm, auth.service, scopes, credentials);
    for (let tries = 0; ; tries++) {
      try {
        const token = await this.options.tokens.obtain(key, () => this.#fetchToken(auth, scopes, credentials, signal, what));
        return { authorization: `Bearer ${token}`, token, key };
      } catch (err) {
        // A token fetch shared with a caller who canceled: ours goes on, once.
        if (err instanceof CanceledError && !signal?.aborted && tries === 0) continue;
        throw err;
      }
    }
  }

  /** Takes what a 401's challenges ask for; false when nothing ctrexec can do would satisfy them. */
  async #learn(challenges: Challenge[], opts: GetOptions): Promise<boolean> {
    const bearer = challenges.find((c) => c.scheme === "bearer" && c.params["realm"]);
    if (bearer !== undefined) {
      const challengeScope = bearer.params["scope"];
      this.#auth = {
        kind: "bearer",
        realm: bearer.params["realm"]!,
        service: bearer.params["service"],
        scopes: challengeScope && challengeScope !== opts.scope ? challengeScope.split(" ") : [],
      };
      return true;
    }
    if (challenges.some((c) => c.scheme === "basic")) {
      const { credentials } = await this.credentials();
      if (credentials === undefined || this.#auth?.kind === "basic") return false;
      this.#auth = { kind: "basic" };
      return true;
    }
    return false;
  }

  async #refused(status: number, opts: GetOptions, detail: string): Promise<UnauthenticatedError> {
    const lookup = await this.credentials();
    const login = `ctrexec login ${this.domain}`;
    const why = detail ? ` (${detail})` : "";
    if (lookup.credentials === undefined) {
      const helper = lookup.helper
        ? `; ${lookup.path} names ${lookup.helper} for it, which ctrexec does not run, so store the credentials in config.json with \`${login}\``
        : "";
      return new UnauthenticatedError(
        `${this.#from} refused anonymous access to ${opts.what}${why}: it may not exist, or it needs credentials: run \`${login}\`${helper}`,
      );
    }
    const user = lookup.credentials.username;
    const source = lookup.path ? ` from ${lookup.path}` : "";
    if (status === 403) {
      return new UnauthenticatedError(`${this.#from} denied user ${user} access to ${opts.what}${why}: check that the user may pull it`);
    }
    return new UnauthenticatedError(`${this.#from} refused the credentials of user ${user}${source}${why}: check them and run \`${login}\` again`);
  }

  /** The registry's own words from an error response, for a message (bounded, never fails). */
  async #errorText(res: IncomingMessage, opts: GetOptions): Promise<string> {
    try {
      const body = await readBody(res, {
        limit: 64 * 1024,
        idleTimeoutMs: this.options.idleTimeoutMs,
        signal: opts.signal,
        what: "an error",
        from: this.#from,
      });
      return registryMessage(body);
    } catch {
      return "";
    }
  }

  async #fetchToken(
    auth: Extract<AuthMode, { kind: "bearer" }>,
    scopes: readonly string[],
    credentials: RegistryCredentials | undefined,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<{ token: string; expiresIn: number | undefined }> {
    let url: URL;
    try {
      url = new URL(auth.realm);
    } catch {
      throw new UnavailableError(`${this.#from} names a token service that is no URL (${JSON.stringify(auth.realm)})`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new UnavailableError(`${this.#from} names a token service that is not http(s): ${url.href}`);
    }
    if (auth.service) url.searchParams.set("service", auth.service);
    for (const s of scopes) url.searchParams.append("scope", s);
    if (credentials && scopes.length === 0) url.searchParams.set("account", credentials.username);
    const tokenWhat = `a token for ${what} from ${url.host}`;
    const opts = { what: tokenWhat, signal, scope: undefined };
    const answer = await this.#withRetries({ used: 0 }, opts, url, { "user-agent": USER_AGENT }, credentials ? basic(credentials) : undefined);
    const res = answer.res;
    const body = await readBody(res, { limit: 1 << 20, idleTimeoutMs: this.options.idleTimeoutMs, signal, what: tokenWhat, from: answer.url.host });
    if ((statusOf(res) === 401 || statusOf(res) === 403) && !answer.sameOrigin) {
      // Not a refusal of the credentials either: they went to the token service only.
      throw new UnavailableError(
        `token service ${url.host} redirected the request for a token for ${what} to ${answer.url.host}, which refused it (${statusOf(res)}${suffix(registryMessage(body), ": ")}): check the registry's token service`,
      );
    }
    if (statusOf(res) === 401 || statusOf(res) === 403) {
      const detail = registryMessage(body);
      throw await this.#refused(
        statusOf(res),
        { what, signal, scope: undefined },
        detail ? `token service ${url.host}: ${detail}` : `token service ${url.host}`,
      );
    }
    if (statusOf(res) !== 200) {
      throw new UnavailableError(`token service ${url.host} of ${this.#from} answered ${statusOf(res)}${suffix(registryMessage(body))}: retry later`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      throw new UnavailableError(`token service ${url.host} of ${this.#from} sent no JSON`);
    }
    const doc = (typeof parsed === "object" && parsed !== null ? parsed : {}) as Record<string, unknown>;
    const token = typeof doc["token"] === "string" && doc["token"] ? doc["token"] : doc["access_token"];
    if (typeof token !== "string" || token === "") throw new UnavailableError(`token service ${url.host} of ${this.#from} sent no token`);
    const expiresIn = typeof doc["expires_in"] === "number" ? doc["expires_in"] : undefined;
    return { token, expiresIn };
  }

  /**
   * One logical GET: redirects followed, connection errors and 5xx/429 retried within the budget. `target` is a
   * path of the registry (reached by the session's scheme: HTTPS, falling back to plain HTTP for a host where
   * that is allowed and which does not speak TLS) or a whole URL elsewhere (a token service, a foreign layer).
   */
  async #withRetries(
    budget: Budget,
    opts: { what: string; signal: AbortSignal | undefined },
    target: string | URL,
    headers: Record<string, string>,
    authorization: string | undefined,
  ): Promise<Answer> {
    const max = this.options.maxAttempts;
    const atRegistry = typeof target === "string";
    let fellBack = false;
    for (;;) {
      budget.used++;
      const turn = atRegistry ? await this.#schemeTurn(opts.signal, opts.what) : undefined;
      const url = atRegistry ? this.#registryUrl(turn!.scheme, target) : target;
      let answer: Answer;
      try {
        // A completed handshake (or for plain HTTP, connection) settles the probe at once: waiting requests
        // need not wait for the answer.
        const settle = turn?.settle;
        answer = await this.#follow(url, opts, headers, authorization, settle && (() => settle(turn!.scheme)));
      } catch (err) {
        // The registry itself (not a host it redirected to) failed its TLS handshake: does it speak TLS at all?
        const handshake = atRegistry && err instanceof TransportFailure && !(err instanceof HopFailure) ? err.kind : undefined;
        const noTls = handshake === "tls-protocol" && this.#plainHttpAllowed;
        if (noTls && this.#scheme !== "http:") this.options.logger.debug("registry does not speak TLS: using plain HTTP", { registry: this.domain });
        // An untrusted certificate still shows the registry speaks TLS; anything else (refused, canceled) shows
        // nothing, and the next request to start probes again.
        turn?.settle?.(noTls ? "http:" : handshake === "tls-trust" ? "https:" : undefined);
        if (!(err instanceof TransportFailure)) throw err;
        const where = err instanceof HopFailure ? err.host : url.host;
        // Once per request: a second TLS failure would mean the scheme keeps changing under it; the error says so.
        if (noTls && !fellBack) {
          this.#scheme = "http:";
          fellBack = true;
          budget.used--;
          continue;
        }
        const retryable = err.kind === "connect" || err.kind === "idle";
        if (retryable && budget.used < max) {
          const wait = backoffMs(budget.used);
          this.options.logger.debug("registry request failed: retrying", { what: opts.what, error: err.message, waitMs: wait });
          await this.options.sleep(wait, opts.signal);
          continue;
        }
        const registry = !(err instanceof HopFailure) && (atRegistry || where === this.host);
        const insecureCandidate = atRegistry && registry && !this.#plainHttpAllowed ? this.domain : undefined;
        throw unreachable(registry ? this.#from : where, err, budget.used, insecureCandidate);
      }
      const res = answer.res;
      turn?.settle?.(turn.scheme);
      if (RETRY_STATUS.has(statusOf(res)) && budget.used < max) {
        const asked = retryAfterMs(header(res, "retry-after"));
        if (asked !== undefined && asked > MAX_RETRY_AFTER_MS) return answer; // the caller says: rate-limited, retry later
        discard(res, this.options.idleTimeoutMs);
        const wait = asked ?? backoffMs(budget.used);
        this.options.logger.debug("registry answered a retryable status: retrying", { what: opts.what, status: statusOf(res), waitMs: wait });
        await this.options.sleep(wait, opts.signal);
        continue;
      }
      return answer;
    }
  }

  /** Sends, following redirects; Authorization goes only to the origin it was made for. */
  async #follow(
    start: URL,
    opts: { what: string; signal: AbortSignal | undefined },
    baseHeaders: Record<string, string>,
    authorization: string | undefined,
    onSecured: (() => void) | undefined,
  ): Promise<Answer> {
    const authOrigin = start.origin;
    let url = start;
    for (let hop = 0; ; hop++) {
      this.#checkScheme(url, opts.what, hop > 0);
      const headers = { ...baseHeaders };
      if (authorization !== undefined && url.origin === authOrigin) headers["authorization"] = authorization;
      let res: IncomingMessage;
      try {
        res = await send(url, {
          method: "GET",
          headers,
          signal: opts.signal,
          idleTimeoutMs: this.options.idleTimeoutMs,
          caCerts: this.options.caCerts,
          what: opts.what,
          plainHttpAllowed: plainHttpAllowed(url.host, this.options.insecureRegistries),
          ...(hop === 0 && onSecured !== undefined ? { onSecured } : {}),
        });
      } catch (err) {
        if (err instanceof TransportFailure && hop > 0) throw new HopFailure(err, url.host);
        throw err;
      }
      const location = header(res, "location");
      if (!REDIRECT_STATUS.has(statusOf(res)) || location === undefined) return { res, url, sameOrigin: url.origin === authOrigin };
      discard(res, this.options.idleTimeoutMs);
      if (hop >= MAX_REDIRECTS) {
        throw new UnavailableError(
          `${this.#from} redirected ${opts.what} more than ${MAX_REDIRECTS} times (last to ${url.origin}): check the registry`,
        );
      }
      const next = new URL(location, url);
      if (next.origin !== url.origin) this.options.logger.debug("registry redirect", { what: opts.what, to: next.origin });
      url = next;
    }
  }

  /** Plain HTTP only where allowed, checked before any connection (a redirect may ask for it too). */
  #checkScheme(url: URL, what: string, redirected: boolean): void {
    if (url.protocol === "https:") return;
    const via = redirected ? `${this.#from} redirected ${what} to` : `${what} is at`;
    if (url.protocol !== "http:") throw new FailedPreconditionError(`${via} ${url.protocol} URL ${url.origin}, which ctrexec does not fetch from`);
    if (!plainHttpAllowed(url.host, this.options.insecureRegistries)) {
      throw new FailedPreconditionError(
        `${via} plain-HTTP ${url.origin}, which ctrexec does not use for a host that is not loopback: if that host is trusted, add it with --insecure-registry ${url.host}`,
      );
    }
  }
}

/** A failure after a redirect: the message names the host that failed, not the registry. */
class HopFailure extends TransportFailure {
  readonly host: string;
  constructor(err: TransportFailure, host: string) {
    super(err.kind, err.message, err.code, { cause: err });
    this.host = host;
  }
}

/**
 * The error for a request that got no answer. `insecureCandidate` is the registry's domain when it failed a TLS
 * handshake and is not yet allowed plain HTTP: only then can --insecure-registry be the remedy (a loopback
 * registry already may use plain HTTP, and a host a redirect named is reached by the scheme the redirect gave).
 */
export function unreachable(where: string, err: TransportFailure, attempts: number, insecureCandidate: string | undefined): UnavailableError {
  const tries = attempts > 1 ? ` (${attempts} attempts)` : "";
  if (err.kind === "tls-trust") {
    return new UnavailableError(`${where}: ${err.message}: give its CA with caCerts or NODE_EXTRA_CA_CERTS, or add it to the system's CAs`, {
      cause: err,
    });
  }
  if (err.kind === "tls-protocol") {
    const remedy =
      insecureCandidate === undefined
        ? ": check that it serves HTTPS"
        : `: if it serves plain HTTP and is trusted, add it with --insecure-registry ${insecureCandidate}`;
    return new UnavailableError(`${where} unreachable: ${err.message}${remedy}`, { cause: err });
  }
  return new UnavailableError(`${where} unreachable: ${err.message}${tries}: check the address and that it is up, then retry`, { cause: err });
}

/**
 * A 401/403 from the host a registry redirected a download to (object storage). Unavailable, not
 * unauthenticated: no credentials went there, and a download link that expired may work on the next attempt,
 * which gets a fresh redirect.
 */
function storageRefused(host: string, status: number, detail: string, what: string, registry: string): UnavailableError {
  return new UnavailableError(
    `storage ${host} refused the download (${status}${suffix(detail, ": ")}) of ${what}, which ${registry} redirected there: retry later; if it persists, the registry's storage is misconfigured`,
  );
}

/** Waits for `probe` (which never rejects), or until `signal` cancels the wait. */
function untilSettled(probe: Promise<void>, signal: AbortSignal | undefined, what: string): Promise<void> {
  if (signal === undefined) return probe;
  if (signal.aborted) return Promise.reject(canceled(what, signal));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(canceled(what, signal));
    signal.addEventListener("abort", onAbort, { once: true });
    void probe.then(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
  });
}

function basic(c: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;
}

export function header(res: IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** " (s)", or with `separator` ": s"; nothing for an empty `s`. */
function suffix(s: string, separator?: string): string {
  if (!s) return "";
  return separator === undefined ? ` (${s})` : `${separator}${s}`;
}
