/** JSON for containerd, with bigints (rlimit infinity, 2^64−1) written as exact integers, which JSON numbers cannot hold. */
export function serializeSpec(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? `\u0000bigint:${v}` : v)).replace(/"\\u0000bigint:(\d+)"/g, "$1");
}
