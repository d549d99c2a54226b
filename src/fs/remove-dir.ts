import { rm, rmdir, unlink } from "node:fs/promises";

/**
 * Removes a directory whose usual contents are known (a run dir's owner file, a FIFO set): those files, then
 * the directory, three or four calls. `rm -r` takes a thread-pool round trip for every lstat, readdir and retry
 * (~10 for a FIFO set) and is kept for what else may be there. A directory already gone is fine.
 */
export async function removeDir(dir: string, files: readonly string[]): Promise<void> {
  await Promise.all(files.map((f) => unlink(f).catch(() => {})));
  try {
    await rmdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    await rm(dir, { recursive: true, force: true });
  }
}
