/** Content digests: the algorithms a reference or descriptor may use, and checking bytes against them. */
import { createHash } from "node:crypto";

/** Hex length of each algorithm go-digest registers (and containerd accepts). */
export const DIGEST_ALGORITHMS: Readonly<Record<string, number>> = { sha256: 64, sha384: 96, sha512: 128 };

/** Whether `digest` is a well-formed digest of a known algorithm. */
export function isDigest(digest: string): boolean {
  const i = digest.indexOf(":");
  if (i < 0) return false;
  const length = DIGEST_ALGORITHMS[digest.slice(0, i)];
  return length !== undefined && digest.length - i - 1 === length && /^[a-f0-9]+$/.test(digest.slice(i + 1));
}

/** The digest of `data` with the algorithm of `like` (sha256 when `like` is absent). */
export function digestOf(data: Uint8Array, like?: string): string {
  const algorithm = like?.slice(0, like.indexOf(":")) || "sha256";
  return `${algorithm}:${createHash(algorithm).update(data).digest("hex")}`;
}
