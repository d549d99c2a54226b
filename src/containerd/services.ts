import type { DescService } from "@bufbuild/protobuf";
import type * as Convert from "./convert.js";
import type * as ConvertEvents from "./convert-events.js";
import type * as ConvertSnapshots from "./convert-snapshots.js";

/**
 * Each containerd service the client calls, with the converters its answers need, loaded on the service's first
 * call. Evaluating a generated file decodes its embedded descriptor, the largest part of the protocol's start-up
 * cost (docs/performance.md, "CLI start-up"): a process pays only for the services it calls (`ctrexec run`
 * needs Containers, Tasks, Events and Version; `ps` Containers and Tasks; `--help` none). Nothing may import
 * src/gen/ or the converters eagerly.
 */
export interface Loaded<S extends DescService, C> {
  readonly service: S;
  readonly to: C;
}

type To = typeof Convert;

/**
 * Loads once; concurrent first calls share the load. A load that failed stays failed: Node keeps a module that
 * could not be loaded as failed (ESM's module map; the CLI bundle's initialisers rethrow their first error), so a
 * retry would only repeat the error. The files are the package's own: they fail to load only when the package is
 * broken or the process is out of file descriptors at that moment.
 */
function once<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () => (loaded ??= load());
}

const convert = once(() => import("./convert.js"));

/** A service with the shared converters. */
function service<S extends DescService>(load: () => Promise<S>): () => Promise<Loaded<S, To>> {
  return once(async () => {
    const [s, to] = await Promise.all([load(), convert()]);
    return { service: s, to };
  });
}

export const services = {
  containers: service(async () => (await import("../gen/containers_pb.js")).Containers),
  tasks: service(async () => (await import("../gen/tasks_pb.js")).Tasks),
  version: service(async () => (await import("../gen/version_pb.js")).Version),
  namespaces: service(async () => (await import("../gen/namespaces_pb.js")).Namespaces),
  introspection: service(async () => (await import("../gen/introspection_pb.js")).Introspection),
  images: service(async () => (await import("../gen/images_pb.js")).Images),
  leases: service(async () => (await import("../gen/leases_pb.js")).Leases),
  diff: service(async () => (await import("../gen/diff_pb.js")).Diff),
  events: once(async () => {
    const [{ Events }, to] = await Promise.all([import("../gen/events_pb.js"), import("./convert-events.js")]);
    return { service: Events, to } satisfies Loaded<typeof Events, typeof ConvertEvents>;
  }),
  snapshots: once(async () => {
    const [{ Snapshots }, to, snapshots] = await Promise.all([import("../gen/snapshots_pb.js"), convert(), import("./convert-snapshots.js")]);
    return { service: Snapshots, to: { ...to, ...snapshots } } satisfies Loaded<typeof Snapshots, To & typeof ConvertSnapshots>;
  }),
  /** Content, with the streamed write, which uses its generated request schema. */
  content: once(async () => {
    const [{ Content }, to, { writeContent }] = await Promise.all([import("../gen/content_pb.js"), convert(), import("./content-write.js")]);
    return { service: Content, to, writeContent };
  }),
};
