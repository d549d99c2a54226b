import { Writable } from "node:stream";
import type { ContainerdExecutor } from "../src/executor/executor.js";
import { bindMountable } from "../src/executor/mountables.js";

/** A sink for a process's output: the bench measures the run, not what reads its output. */
export class Discard extends Writable {
  override _write(_chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    cb();
  }
}

/** Timed runs and execs of `/bin/true` on a directory root, each as one call of the executor. */
export interface RunExecProbe {
  /** One run of `/bin/true`, in ms. */
  run(): Promise<number>;
  /** One exec of `/bin/true` into a long-lived run (started on the first call), in ms. */
  exec(): Promise<number>;
  /** Ends the long-lived run, if one was started. */
  stop(): Promise<void>;
}

export function runExecProbe(ex: ContainerdExecutor, rootfs: string): RunExecProbe {
  const root = () => ({ source: bindMountable(rootfs) });
  const io = () => ({ stdout: new Discard(), stderr: new Discard() });
  const ac = new AbortController();
  let long: { id: Promise<string>; done: Promise<unknown> } | undefined;
  const target = () => {
    if (!long) {
      let started!: (id: string) => void;
      const id = new Promise<string>((r) => (started = r));
      const done = ex
        .run({ root: root(), process: { meta: { args: ["sleep", "600"] } }, signal: ac.signal, onStarted: ({ id }) => started(id) })
        .catch(() => {});
      long = { id, done };
    }
    return long.id;
  };
  return {
    async run() {
      const t = performance.now();
      await ex.run({ root: root(), process: { meta: { args: ["/bin/true"] }, ...io() } });
      return performance.now() - t;
    },
    async exec() {
      const id = await target();
      const t = performance.now();
      await ex.exec(id, { meta: { args: ["/bin/true"] }, ...io() });
      return performance.now() - t;
    },
    async stop() {
      ac.abort();
      await long?.done;
    },
  };
}
