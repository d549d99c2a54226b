import { randomBytes } from "node:crypto";
import type { ContainerdClient } from "../../containerd/client.js";
import { deleteContainerRecord, deleteTask } from "../../containerd/task-cleanup.js";
import type { TaskCreator } from "../../containerd/task-creator.js";
import { jsonAny, SPEC_TYPE_URL } from "../../containerd/types.js";
import { defaultSpec } from "../../oci/defaults.js";
import { serializeSpec } from "../../oci/serialize.js";
import type { Logger } from "../../util/logger.js";
import { LABEL, ownerId } from "../labels.js";
import { SHIM_GROUP_ANNOTATION } from "./group-name.js";

/**
 * Starts an idle container (a `sleep` on the read-only default rootfs) in shim group `group`: the shim of a
 * group lives as long as one of its containers does, so this keeps it up between runs (warm shims). Labelled
 * like a run, so prune finds it if this process dies. Returns the anchor's container id.
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
