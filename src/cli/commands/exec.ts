import { InvalidArgumentError, type ProcessMeta } from "../../index.js";
import { type OptionSpec, optionsHelp, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS, openExecutor } from "../context.js";
import { envFromFlags } from "../flags.js";
import { withProcessSession } from "../session.js";

const OPTIONS: OptionSpec[] = [
  { name: "tty", short: "t", kind: "flag", help: "allocate a pseudo-terminal" },
  { name: "interactive", short: "i", kind: "flag", help: "keep stdin open and pass it to the process" },
  { name: "user", short: "u", kind: "value", arg: "USER", help: "user[:group] or uid[:gid] (default: the run's)" },
  { name: "workdir", short: "w", kind: "value", arg: "DIR", help: "working directory (default: the run's; not created)" },
  { name: "env", short: "e", kind: "list", arg: "K=V", help: "set a variable over the run's; a bare K copies ctrexec's value" },
  { name: "env-file", kind: "list", arg: "FILE", help: "read variables from a file" },
  ...GLOBAL_OPTIONS,
];

export const EXEC_HELP = `Usage: ctrexec exec [OPTIONS] ID [--] COMMAND [ARG...]

Run a command in a running container, started by any ctrexec process on this host.

Options:
${optionsHelp(OPTIONS)}

Examples:
  ctrexec exec build1 ps
  ctrexec exec -t -i -u root build1 sh
  ctrexec exec -e DEBUG=1 -w /src build1 -- make check
`;

export async function execCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, OPTIONS, "exec");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(EXEC_HELP);
    return 0;
  }
  let rest = p.rest;
  const id = rest[0];
  rest = rest.slice(1);
  if (rest[0] === "--") rest = rest.slice(1);
  if (!id || rest.length === 0)
    throw new InvalidArgumentError(`"ctrexec exec" requires an ID and a command. See 'ctrexec exec --help'.`, { field: "argv" });
  const env = await envFromFlags(p.lists.get("env-file") ?? [], p.lists.get("env") ?? []);
  const meta: ProcessMeta = { args: rest, env, tty: p.flags.has("tty") };
  const user = p.values.get("user");
  if (user !== undefined) meta.user = user;
  const cwd = p.values.get("workdir");
  if (cwd !== undefined) meta.cwd = cwd;

  const executor = await openExecutor(ctx);
  return withProcessSession(ctx, executor, meta, p.flags.has("interactive"), async (process, signal) => {
    await executor.exec(id, process, { signal });
    return 0;
  });
}
