import { PerformanceObserver } from "node:perf_hooks";
import { nativeAddon } from "../util/native.js";

/**
 * Gives the memory of bulk output back to the kernel once it is garbage. Every chunk read from a FIFO is a
 * fresh buffer for the caller; freed, glibc keeps the memory (after 1.5 GiB of output a process stayed ~40 MB
 * larger, 109 vs 70 MB, until `malloc_trim`). And the chunks are freed only when V8 collects their buffers,
 * which for large chunks can be long after the output ended: V8 lets up to ~64 MB of dead external memory
 * wait for a collection that ordinary allocation would trigger. So, once 32 MiB went through since the last
 * trim and an output stream ends, the heap is trimmed (~4 ms) 250 ms later and again right after the next
 * garbage collection (if one comes within a minute). Trimming while output still flows would not help, as the
 * heap grows right back. Without the addon or glibc this does nothing.
 */

/** Output copied since the heap was last trimmed, process-wide (the heap is the process's). */
let copiedSinceTrim = 0;
const TRIM_AFTER_BYTES = 32 << 20;
/** Long enough for a collection that was due to have freed the last chunks. */
const TRIM_DELAY_MS = 250;
const WATCH_GC_MS = 60_000;
const AFTER_GC_MS = 100;

let gcWatch: { observer: PerformanceObserver; timer: NodeJS.Timeout } | undefined;

function trim(): void {
  nativeAddon()?.trimHeap?.();
}

function stopWatchingGc(): void {
  if (!gcWatch) return;
  gcWatch.observer.disconnect();
  clearTimeout(gcWatch.timer);
  gcWatch = undefined;
}

function trimAfterNextGc(): void {
  if (gcWatch || !nativeAddon()?.trimHeap) return;
  const observer = new PerformanceObserver(() => {
    stopWatchingGc();
    // V8 frees the buffers of a collection on a background sweeper shortly after it: give it time.
    setTimeout(trim, AFTER_GC_MS).unref();
  });
  observer.observe({ entryTypes: ["gc"] });
  gcWatch = { observer, timer: setTimeout(stopWatchingGc, WATCH_GC_MS).unref() };
}

/** Counts output bytes for `outputEnded()`. */
export function noteOutput(bytes: number): void {
  copiedSinceTrim += bytes;
}

/** Call when an output stream ended. */
export function outputEnded(): void {
  if (copiedSinceTrim < TRIM_AFTER_BYTES) return;
  copiedSinceTrim = 0;
  setTimeout(trim, TRIM_DELAY_MS).unref();
  trimAfterNextGc();
}
