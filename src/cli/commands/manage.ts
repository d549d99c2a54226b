import { realpath } from "node:fs/promises";
import { constants } from "node:os";
import { getRun, InvalidArgumentError, listRuns, PruneIncompleteError, prune } from "../../index.js";
import { type OptionSpec, optionsHelp, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS, openClient } from "../context.js";
import { flagError } from "../flags.js";

const FORMAT: OptionSpec = { name: "format", kind: "value", arg: "FORMAT", help: "table (default) or json" };

function format(value: string | undefined): "table" | "json" {
  if (value === undefined || value === "table") return "table";
  if (value === "json") return "json";
  throw flagError("--format", value, "use table or json");
}

function age(iso: string | undefined): string {
  if (!iso) return "?";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return `${rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3)))
        .join("")
        .trimEnd(),
    )
    .join("\n")}\n`;
}

const PS_OPTIONS: OptionSpec[] = [FORMAT, ...GLOBAL_OPTIONS];
export const PS_HELP = `Usage: ctrexec ps [--format table|json]

List the runs in the namespace (made by any ctrexec process): in progress, finished and still being deleted,
or finished and "kept for shim reuse" (a long-lived executor keeps such a run's stopped container so that its
next runs reuse the shim; it is deleted within minutes).

Options:
${optionsHelp(PS_OPTIONS)}

Examples:
  ctrexec ps
  ctrexec --namespace builds ps --format json
`;

export async function psCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, PS_OPTIONS, "ps");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(PS_HELP);
    return 0;
  }
  if (p.rest.length) throw new InvalidArgumentError(`"ctrexec ps" takes no arguments`, { field: "argv" });
  const fmt = format(p.values.get("format"));
  await using client = openClient(ctx);
  // The fields ps has always printed; the labels stay out of its output.
  const runs = (await listRuns(client)).map(({ labels: _, ...run }) => run);
  if (fmt === "json") ctx.stdout.write(`${JSON.stringify(runs, null, 2)}\n`);
  else {
    const rows = [["ID", "PID", "STATUS", "AGE", "COMMAND"]];
    for (const r of runs) {
      const note = r.ownerAlive === false ? " (orphaned)" : r.keptForShimReuse ? " (kept for shim reuse)" : "";
      rows.push([r.id, String(r.pid), r.status + note, age(r.created), Array.isArray(r.command) ? r.command.join(" ") : String(r.command)]);
    }
    ctx.stdout.write(table(rows));
  }
  return 0;
}

const KILL_OPTIONS: OptionSpec[] = [
  { name: "signal", short: "s", kind: "value", arg: "SIGNAL", help: "signal to send (default SIGKILL)" },
  ...GLOBAL_OPTIONS,
];
export const KILL_HELP = `Usage: ctrexec kill [-s SIGNAL] ID

Send a signal to a run's main process (default SIGKILL).

Options:
${optionsHelp(KILL_OPTIONS)}

Examples:
  ctrexec kill build1
  ctrexec kill -s TERM build1
`;

export function parseSignalName(value: string): number {
  if (/^\d+$/.test(value) && Number(value) > 0 && Number(value) < 65) return Number(value);
  const name = value.toUpperCase().startsWith("SIG") ? value.toUpperCase() : `SIG${value.toUpperCase()}`;
  const n = (constants.signals as Record<string, number | undefined>)[name];
  if (n === undefined) throw flagError("--signal", value, "unknown signal");
  return n;
}

export async function killCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, KILL_OPTIONS, "kill");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(KILL_HELP);
    return 0;
  }
  const [id, ...extra] = p.rest;
  if (!id || extra.length) throw new InvalidArgumentError(`"ctrexec kill" requires exactly one ID`, { field: "argv" });
  const signal = parseSignalName(p.values.get("signal") ?? "SIGKILL");
  await using client = openClient(ctx);
  await getRun(client, id);
  await client.tasks.kill({ containerId: id, signal });
  ctx.stdout.write(`${id}\n`);
  return 0;
}

const PRUNE_OPTIONS: OptionSpec[] = [...GLOBAL_OPTIONS];
export const PRUNE_HELP = `Usage: ctrexec prune

Remove what runs of ctrexec processes that are gone left behind in the namespace: tasks,
containers, shims, FIFO directories, run directories and mounts. Runs of live processes are
never touched, nor those of processes in a pid namespace prune cannot see (on the host, as
root, it sees every one). Safe to run at any time.

Options:
${optionsHelp(PRUNE_OPTIONS)}

Examples:
  ctrexec prune
  ctrexec --namespace builds prune
`;

export async function pruneCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, PRUNE_OPTIONS, "prune");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(PRUNE_HELP);
    return 0;
  }
  if (p.rest.length) throw new InvalidArgumentError(`"ctrexec prune" takes no arguments`, { field: "argv" });
  // By its real path, as the executor uses it: mountinfo, which prune compares with, shows real paths.
  const root = await realpath(ctx.root).catch(() => ctx.root);
  await using client = openClient(ctx);
  let removed: string[];
  try {
    removed = await prune({ client, stateDir: root, fifoRoot: ctx.fifoRoot, logger: ctx.logger });
  } catch (err) {
    // Something was left: what was removed is printed all the same, then the error says what is left.
    if (err instanceof PruneIncompleteError) for (const line of err.removed) ctx.stdout.write(`removed ${line}\n`);
    throw err;
  }
  for (const line of removed) ctx.stdout.write(`removed ${line}\n`);
  if (removed.length === 0) ctx.stdout.write("nothing to remove\n");
  return 0;
}

const IMAGES_OPTIONS: OptionSpec[] = [FORMAT, ...GLOBAL_OPTIONS];
export const IMAGES_HELP = `Usage: ctrexec images [--format table|json]

List the images in the namespace's image store (what --image runs without pulling). Pull one
with \`ctrexec pull REF\` (\`ctrexec run --image REF\` pulls a missing one), or import one with
\`ctr -n NAMESPACE images import IMAGE.tar\`.

Options:
${optionsHelp(IMAGES_OPTIONS)}
`;

export async function imagesCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, IMAGES_OPTIONS, "images");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(IMAGES_HELP);
    return 0;
  }
  if (p.rest.length) throw new InvalidArgumentError(`"ctrexec images" takes no arguments`, { field: "argv" });
  const fmt = format(p.values.get("format"));
  await using client = openClient(ctx);
  const images = (await client.images.list()).map((i) => ({
    name: i.name,
    digest: i.target?.digest ?? "",
    mediaType: i.target?.mediaType ?? "",
    created: i.createdAt ? new Date(i.createdAt.seconds * 1000).toISOString() : "",
  }));
  if (fmt === "json") ctx.stdout.write(`${JSON.stringify(images, null, 2)}\n`);
  else ctx.stdout.write(table([["NAME", "DIGEST", "CREATED"], ...images.map((i) => [i.name, i.digest.slice(0, 19), `${age(i.created)} ago`])]));
  return 0;
}

const SNAPSHOTS_OPTIONS: OptionSpec[] = [
  FORMAT,
  { name: "snapshotter", kind: "value", arg: "NAME", help: "snapshotter (default overlayfs)" },
  ...GLOBAL_OPTIONS,
];
export const SNAPSHOTS_HELP = `Usage: ctrexec snapshots ls [--format table|json]
       ctrexec snapshots rm NAME [NAME...]

List committed snapshots (what --snapshot can run on, made by --commit), or remove them.

Options:
${optionsHelp(SNAPSHOTS_OPTIONS)}

Examples:
  ctrexec run --image docker.io/library/busybox:latest --commit step1 -- sh -c 'echo a > /a'
  ctrexec snapshots ls
  ctrexec snapshots rm step1
`;

export async function snapshotsCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, SNAPSHOTS_OPTIONS, "snapshots");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(SNAPSHOTS_HELP);
    return 0;
  }
  const [sub, ...names] = p.rest;
  const snapshotter = p.values.get("snapshotter") ?? "overlayfs";
  await using client = openClient(ctx);
  if (sub === "ls" || sub === "list") {
    if (names.length) throw new InvalidArgumentError(`"ctrexec snapshots ls" takes no names`, { field: "argv" });
    const fmt = format(p.values.get("format"));
    const snaps = (await client.snapshots.list(snapshotter)).map((s) => ({ name: s.name, kind: s.kind.toLowerCase(), parent: s.parent }));
    if (fmt === "json") ctx.stdout.write(`${JSON.stringify(snaps, null, 2)}\n`);
    else ctx.stdout.write(table([["NAME", "KIND", "PARENT"], ...snaps.map((s) => [s.name, s.kind, s.parent])]));
    return 0;
  }
  if (sub === "rm" || sub === "remove") {
    if (names.length === 0) throw new InvalidArgumentError(`"ctrexec snapshots rm" needs at least one NAME`, { field: "argv" });
    for (const name of names) {
      await client.snapshots.remove({ snapshotter, key: name });
      ctx.stdout.write(`${name}\n`);
    }
    return 0;
  }
  throw new InvalidArgumentError(`"ctrexec snapshots" needs ls or rm. See 'ctrexec snapshots --help'.`, { field: "argv" });
}
