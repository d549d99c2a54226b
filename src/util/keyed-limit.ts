/** At most `limit` calls at a time per key; the others wait their turn, in order. */
export class KeyedLimit {
  readonly #limit: number;
  readonly #keys = new Map<string, { running: number; waiting: (() => void)[] }>();

  constructor(limit: number) {
    this.#limit = limit;
  }

  async run<T>(key: string, call: () => Promise<T>): Promise<T> {
    let k = this.#keys.get(key);
    if (!k) {
      k = { running: 0, waiting: [] };
      this.#keys.set(key, k);
    }
    const entry = k;
    if (entry.running >= this.#limit) await new Promise<void>((resolve) => entry.waiting.push(resolve));
    else entry.running++;
    try {
      return await call();
    } finally {
      // A waiting call takes this call's place: no newcomer can slip in between.
      const next = entry.waiting.shift();
      if (next) next();
      else if (--entry.running === 0) this.#keys.delete(key);
    }
  }
}
