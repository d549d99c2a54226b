import { rmdir, unlink } from "node:fs/promises";
import { removeTree } from "./remove-tree.js";

/**
 * Removes a directory whose usual contents are known (a run dir's owner file, a FIFO set): those files, then
 * the directory, three or four calls. Anything else there goes through removeTree (fd-relative, never through
 * a mount or a swapped symlink), which costs a thread-pool round trip more. A directory already gone is fine.
 */
export async function removeDir(dir: string, files: readonly string[]): Promise<void> {
  await Promise.all(files.map((f) => unlink(f).catch(() => {})));
  try {
    await rmdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    // Something unexpected is there: removed as a dead process's leftovers are, never through a mount.
    await removeTree(dir);
  }
}
