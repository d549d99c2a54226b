import { createHash } from "node:crypto";
import { Writable } from "node:stream";

/** A Writable that keeps everything written to it. */
export class Collect extends Writable {
  readonly chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk);
    cb();
  }
  get buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
  get text(): string {
    return this.buffer.toString("utf8");
  }
}

/** A Writable that only counts and hashes, for large outputs. */
export class HashSink extends Writable {
  readonly #hash = createHash("sha256");
  bytes = 0;
  writes = 0;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    this.writes++;
    cb();
  }
  digest(): string {
    return this.#hash.digest("hex");
  }
}

/** sha256 of `pattern` repeated until `size` bytes (what `yes X | head -c size` prints for pattern "X\n"). */
export function repeatedDigest(pattern: string, size: number): string {
  const unit = Buffer.from(pattern);
  const block = Buffer.alloc(unit.length * Math.ceil(65536 / unit.length));
  for (let i = 0; i < block.length; i += unit.length) unit.copy(block, i);
  const hash = createHash("sha256");
  let left = size;
  while (left > 0) {
    const n = Math.min(left, block.length);
    hash.update(block.subarray(0, n));
    left -= n;
  }
  return hash.digest("hex");
}
