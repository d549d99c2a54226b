/**
 * The ctrexec command line: docker/nerdctl spellings over the public library API. Exit codes: the process's
 * own, 128+n for a signal, 125 when ctrexec failed, 126/127 when the command cannot run / was not found.
 */
import { type OptionSpec, optionsHelp, parseOptions } from "./args.js";
import { EXEC_HELP, execCommand } from "./commands/exec.js";
import { infoCommand } from "./commands/info.js";
import { loginCommand, logoutCommand } from "./commands/login.js";
import { imagesCommand, killCommand, pruneCommand, psCommand, snapshotsCommand } from "./commands/manage.js";
import { pullCommand } from "./commands/pull.js";
import { rootlessCommand } from "./commands/rootless.js";
import { runCommand } from "./commands/run.js";
import { type Context, contextFrom, GLOBAL_OPTIONS, openClient } from "./context.js";
import { EXIT_OWN_FAILURE, errorLine, exitCodeFor } from "./exit-codes.js";
import { announceStarted, runInside } from "./rootless-enter.js";
import { VERSION } from "./version.js";

const MAIN_OPTIONS: OptionSpec[] = [...GLOBAL_OPTIONS, { name: "version", kind: "flag", help: "print ctrexec's version" }];

const USAGE = `Usage: ctrexec [OPTIONS] COMMAND

Run processes in containers through containerd.

Commands:
  run       run a command in a new container
  exec      run a command in a running container
  ps        list runs in progress
  kill      signal a run
  prune     remove what dead ctrexec processes left behind
  info      show the setup ctrexec runs on
  images    list the images --image can run
  pull      pull an image from a registry
  login     log in to a registry (credentials for pull)
  logout    log out from a registry
  snapshots list or remove committed snapshots
  rootless  start, stop or enter this user's rootless containerd
  version   print the versions of ctrexec and containerd

Options:
${optionsHelp(MAIN_OPTIONS)}

Environment:
  CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE   containerd socket and namespace
  CTREXEC_ROOT, CTREXEC_FIFO_ROOT            state dir and FIFO root
  CTREXEC_SHIM_LAUNCHER                      "off", or the path of the runtime binary containerd runs
                                             for ctrexec's tasks (default: the built launcher; ctrexec info)
  DOCKER_CONFIG                              where login keeps credentials (default ~/.docker)
  NODE_EXTRA_CA_CERTS                        a PEM file of CAs registries are trusted with, besides the system's

Run 'ctrexec COMMAND --help' for a command's options and examples.
`;

type Command = (argv: string[], ctx: Context) => Promise<number>;

const versionCommand: Command = async (argv, parent) => {
  const p = parseOptions(argv, GLOBAL_OPTIONS, "version");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write("Usage: ctrexec version\n\nPrint the versions of ctrexec and of the containerd it talks to.\n");
    return 0;
  }
  await using client = openClient(ctx);
  const server = await client.version();
  ctx.stdout.write(`ctrexec ${VERSION}\ncontainerd ${server.version} (${server.revision}) at ${client.address}\n`);
  return 0;
};

const COMMANDS: Record<string, Command> = {
  run: runCommand,
  exec: execCommand,
  ps: psCommand,
  kill: killCommand,
  prune: pruneCommand,
  info: infoCommand,
  images: imagesCommand,
  pull: pullCommand,
  login: loginCommand,
  logout: logoutCommand,
  snapshots: snapshotsCommand,
  rootless: rootlessCommand,
  version: versionCommand,
};

/**
 * Commands that mount (a run's root and its mounts, exec's user lookup in it, prune's unmounts): with a rootless
 * containerd they run in its namespaces, where this process re-executes itself. The others only speak the API.
 */
const MOUNTING = new Set(["run", "exec", "prune"]);

export async function main(argv: string[]): Promise<number> {
  announceStarted();
  try {
    const p = parseOptions(argv, MAIN_OPTIONS, "ctrexec");
    const ctx = contextFrom(p);
    if (p.flags.has("version")) {
      ctx.stdout.write(`ctrexec ${VERSION}\n`);
      return 0;
    }
    const [name, ...rest] = p.rest;
    if (p.flags.has("help") || name === "help") {
      if (name === "exec" || rest[0] === "exec") {
        ctx.stdout.write(EXEC_HELP);
        return 0;
      }
      ctx.stdout.write(USAGE);
      return 0;
    }
    if (name === undefined) {
      ctx.stderr.write(USAGE);
      return EXIT_OWN_FAILURE;
    }
    const command = COMMANDS[name];
    if (!command) {
      ctx.stderr.write(`ctrexec: unknown command "${name}"\nSee 'ctrexec --help'.\n`);
      return EXIT_OWN_FAILURE;
    }
    if (ctx.rootless && !ctx.rootless.inside && MOUNTING.has(name)) {
      return await runInside(ctx.rootless, [process.execPath, ...process.execArgv, process.argv[1]!, ...argv]);
    }
    return await command(rest, ctx);
  } catch (err) {
    // Errors of run and exec are mapped in their session; what gets here is ctrexec's own failure (125), or a
    // pull ended by a signal (128+n).
    const { code } = exitCodeFor(err);
    process.stderr.write(`${errorLine(err)}\n`);
    return code;
  }
}
