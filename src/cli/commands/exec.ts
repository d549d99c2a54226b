import { readFile } from "node:fs/promises";
import { InvalidArgumentError } from "../../errors.js";
import type { ProcessMeta } from "../../executor/types.js";
import { type OptionSpec, optionsHelp, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS, openExecutor } from "../context.js";
import { errorLine, exitCodeFor } from "../exit-codes.js";
import { flagError, parseEnv, parseEnvFile } from "../flags.js";
import { forwardSignals, openTerminal } from "../terminal.js";

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
  if (!id || rest.length === 0) throw new InvalidArgumentError(`"ctrexec exec" requires an ID and a command. See 'ctrexec exec --help'.`, { field: "argv" });
  const env: string[] = [];
  for (const f of p.lists.get("env-file") ?? []) {
    const text = await readFile(f, "utf8").catch((err: Error) => {
      throw flagError("--env-file", f, err.message);
    });
    env.push(...parseEnvFile(text));
  }
  for (const e of p.lists.get("env") ?? []) {
    const v = parseEnv(e);
    if (v !== undefined) env.push(v);
  }
  const meta: ProcessMeta = { args: rest, env, tty: p.flags.has("tty") };
  const user = p.values.get("user");
  if (user !== undefined) meta.user = user;
  const cwd = p.values.get("workdir");
  if (cwd !== undefined) meta.cwd = cwd;

  const executor = await openExecutor(ctx);
  const interactive = p.flags.has("interactive");
  const terminal = openTerminal(meta.tty ?? false, interactive);
  const cancel = new AbortController();
  const forwarding = forwardSignals(() => cancel.abort(new Error("interrupted")));
  const stdin = interactive ? process.stdin : null;
  try {
    if (terminal.consoleSize) meta.consoleSize = terminal.consoleSize;
    await executor.exec(
      id,
      {
        meta,
        stdin,
        stdout: process.stdout,
        stderr: meta.tty ? null : process.stderr,
        ...(terminal.resize ? { resize: terminal.resize } : {}),
        signals: forwarding.signals,
      },
      { signal: cancel.signal },
    );
    return 0;
  } catch (err) {
    const { code, print } = exitCodeFor(err);
    if (print) ctx.stderr.write(errorLine(err) + "\n");
    return code;
  } finally {
    forwarding.stop();
    terminal.restore();
    if (stdin) stdin.destroy();
    await executor.close();
  }
}
