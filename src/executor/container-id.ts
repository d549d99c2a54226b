import { randomBytes } from "node:crypto";
import { InvalidArgumentError } from "../errors.js";

/** containerd's identifier rule; short enough for the FIFO dir and bundle paths. */
const ID_RE = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
export const MAX_ID_LENGTH = 76;

/**
 * Checks a run id before anything is created. BuildKit allows letters and digits only; ctrexec allows what
 * containerd allows (also `.`, `_`, `-` between them), which excludes `/`, `..` and anything a path could abuse.
 */
export function validateContainerId(id: string): void {
  if (id === "") throw new InvalidArgumentError("container id must not be empty", { field: "id" });
  if (id.length > MAX_ID_LENGTH || !ID_RE.test(id)) {
    throw new InvalidArgumentError(
      `invalid container id ${JSON.stringify(id.length > 100 ? `${id.slice(0, 100)}…` : id)}: use at most ` +
        `${MAX_ID_LENGTH} letters and digits, optionally joined by single '.', '_' or '-'`,
      { field: "id" },
    );
  }
}

/** A random 25-character base-36 id (~129 bits), like BuildKit's identity.NewID. */
export function newContainerId(): string {
  const bytes = randomBytes(17);
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n.toString(36).padStart(25, "0").slice(-25);
}
