/**
 * Bearer tokens, cached per (token service, scope, credentials) for their lifetime, shared by every client in
 * the process: the three layer downloads of one pull, and the next pull of the same repository, then ask the
 * token service once instead of once each.
 */
import { createHash } from "node:crypto";
import type { RegistryCredentials } from "./types.js";

/** The lifetime the token spec gives a token that states none. */
export const DEFAULT_TOKEN_SECONDS = 60;
/** A token is dropped this long before it expires (at most half its lifetime), so none expires in flight. */
const MARGIN_MS = 10_000;

interface Entry {
  token: string;
  expiresAt: number;
}

export class TokenCache {
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #pending = new Map<string, Promise<string>>();

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  static key(realm: string, service: string | undefined, scopes: readonly string[], credentials: RegistryCredentials | undefined): string {
    // The credentials are part of the key (a token carries their rights) but never kept in clear.
    const who = credentials ? createHash("sha256").update(`${credentials.username}\0${credentials.password}`).digest("hex") : "anonymous";
    return JSON.stringify([realm, service ?? "", [...scopes].sort(), who]);
  }

  get(key: string): string | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (this.#now() >= e.expiresAt) {
      this.#entries.delete(key);
      return undefined;
    }
    return e.token;
  }

  set(key: string, token: string, expiresInSeconds: number | undefined): void {
    const lifetime = (expiresInSeconds !== undefined && expiresInSeconds > 0 ? expiresInSeconds : DEFAULT_TOKEN_SECONDS) * 1000;
    this.#entries.set(key, { token, expiresAt: this.#now() + lifetime - Math.min(MARGIN_MS, lifetime / 2) });
  }

  /** Drops `token` under `key` (the registry refused it); a newer token someone else got meanwhile stays. */
  invalidate(key: string, token: string): void {
    if (this.#entries.get(key)?.token === token) this.#entries.delete(key);
  }

  /** The cached token, else one `fetch` shared by everyone who asks for the same key meanwhile. */
  async obtain(key: string, fetch: () => Promise<{ token: string; expiresIn: number | undefined }>): Promise<string> {
    const cached = this.get(key);
    if (cached !== undefined) return cached;
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = fetch()
        .then(({ token, expiresIn }) => {
          this.set(key, token, expiresIn);
          return token;
        })
        .finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    return pending;
  }

  clear(): void {
    this.#entries.clear();
  }
}

export const sharedTokens = new TokenCache();
