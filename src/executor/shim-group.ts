import { randomBytes } from "node:crypto";
import type { ContainerdClient } from "../containerd/client.js";
import type { TaskCreator } from "../containerd/shim-launcher.js";
import { DEFAULT_RUNTIME, deleteContainerRecord, deleteTask } from "../containerd/run-task.js";
import { jsonAny, SPEC_TYPE_URL } from "../containerd/types.js";
import { defaultSpec } from "../oci/defaults.js";
import { serializeSpec } from "../oci/serialize.js";
import type { Logger } from "../util/logger.js";
import { LABEL, ownerId } from "./labels.js";

/** The runc v2 shim hosts every container whose spec carries the same value of this annotation. */
export const SHIM_GROUP_ANNOTATION = "io.containerd.runc.v2.group";

/**
 * A shim group name (or the prefix of this process's group names) no other executor on this containerd uses:
 * a run whose group names another executor's shim is created in that shim. The pid is only for people
 * reading `ps`; where executors run in containers many are pid 1, so 96 random bits make the name unique.
 * Its length costs nothing: the shim's socket is named by a hash of the group (native/shim-launcher.c).
 */
export function uniqueShimGroupName(): string {
  return `ctrexec-${process.pid}-${randomBytes(12).toString("hex")}`;
}

/**
 * Starts an idle container (a `sleep` on the read-only default rootfs) in shim group `group`: the shim of a
 * group lives as long as one of its containers does, so this keeps it up between runs. Labelled like a run,
 * so prune finds it if this process dies. Returns the anchor's container id.
 */
export async function startAnchor(
  client: ContainerdClient,
  tasks: TaskCreator,
  group: string,
  rootfs: string,
  runtime: string,
  logger: Logger,
): Promise<string> {
  const id = `ctrexec-anchor-${randomBytes(6).toString("hex")}`;
  const spec = defaultSpec(client.namespace, id);
  spec.process!.args = ["sleep", "2147483647"];
  spec.root = { path: rootfs, readonly: true };
  spec.mounts = spec.mounts!.filter((m) => m.destination !== "/run");
  spec.annotations = { [SHIM_GROUP_ANNOTATION]: group };
  await client.containers.create({
    id,
    runtime: { name: runtime },
    spec: jsonAny(SPEC_TYPE_URL, serializeSpec(spec)),
    labels: { [LABEL.owner]: ownerId(), [LABEL.command]: JSON.stringify(["shim group anchor", group]) },
  });
  try {
    await tasks.create({ containerId: id });
    await client.tasks.start({ containerId: id });
  } catch (err) {
    await stopAnchor(client, id, logger);
    throw err;
  }
  return id;
}

/** Removes an anchor (its shim exits once it hosts nothing else). Never rejects. */
export async function stopAnchor(client: ContainerdClient, id: string, logger: Logger): Promise<void> {
  if (await deleteTask(client, id, logger).catch(() => false)) {
    await deleteContainerRecord(client, id).catch(() => {});
  }
}

/**
 * One long-lived shim for many runs (`shimGroup`): every run's spec names the group, and an anchor keeps the
 * group's shim alive, so a run no longer starts and stops a shim of its own. If that one shim dies, every run
 * in the group dies with it, and the shim serializes task creation (it holds a lock across runc create), so
 * concurrent runs queue. See `ShimPool` for warm shims without either cost.
 */
export class ShimGroup {
  readonly name: string;
  readonly #client: ContainerdClient;
  readonly #tasks: TaskCreator;
  readonly #logger: Logger;
  #anchor: Promise<string> | undefined;

  constructor(client: ContainerdClient, tasks: TaskCreator, name: string, logger: Logger) {
    this.#client = client;
    this.#tasks = tasks;
    this.name = name;
    this.#logger = logger;
  }

  /** Starts the anchor once (on `rootfs()`, asked for only then); later calls wait for the same start. */
  ensure(rootfs: () => Promise<string>, runtime = DEFAULT_RUNTIME): Promise<string> {
    this.#anchor ??= rootfs().then((r) => startAnchor(this.#client, this.#tasks, this.name, r, runtime, this.#logger)).catch((err: unknown) => {
      this.#anchor = undefined;
      throw err;
    });
    return this.#anchor;
  }

  /** Stops and removes the anchor, which lets the shared shim exit. Idempotent. */
  async close(): Promise<void> {
    const anchor = await this.#anchor?.catch(() => undefined);
    this.#anchor = undefined;
    if (anchor) await stopAnchor(this.#client, anchor, this.#logger);
  }
}
