import { InvalidArgumentError, loginRegistry, logoutRegistry } from "../../index.js";
import { type OptionSpec, optionsHelp, type Parsed, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS } from "../context.js";
import { type PromptInput, readAll, readLine, readSecret } from "../prompt.js";

/** What docker's login and logout take when no registry is named. */
const DEFAULT_REGISTRY = "docker.io";

const LOGIN_OPTIONS: OptionSpec[] = [
  { name: "username", short: "u", kind: "value", arg: "USER", help: "user name (asked for on a terminal when not given)" },
  { name: "password", short: "p", kind: "value", arg: "PASS", help: "password (insecure: other users can see it; use --password-stdin)" },
  { name: "password-stdin", kind: "flag", help: "read the password from stdin" },
  ...GLOBAL_OPTIONS,
];

export const LOGIN_HELP = `Usage: ctrexec login [OPTIONS] [REGISTRY]

Log in to a registry (default ${DEFAULT_REGISTRY}): checks the credentials with the registry, then
stores them in docker's config.json ($DOCKER_CONFIG/config.json, else ~/.docker/config.json;
mode 0600, unencrypted; docker and nerdctl read it too). \`ctrexec pull\` and
\`ctrexec run --image\` use them for that registry only.

Without a password, ctrexec asks for it on the terminal (not echoed); without a terminal,
give it with --password-stdin.

Options:
${optionsHelp(LOGIN_OPTIONS)}

Examples:
  ctrexec login registry.example.com
  printf '%s' "$TOKEN" | ctrexec login -u ci --password-stdin registry.example.com:5000
`;

const LOGOUT_OPTIONS: OptionSpec[] = [...GLOBAL_OPTIONS];

export const LOGOUT_HELP = `Usage: ctrexec logout [REGISTRY]

Remove the credentials stored for a registry (default ${DEFAULT_REGISTRY}) from docker's config.json.

Options:
${optionsHelp(LOGOUT_OPTIONS)}

Examples:
  ctrexec logout registry.example.com
`;

function registryArg(rest: string[], command: string): string {
  if (rest.length > 1)
    throw new InvalidArgumentError(`"ctrexec ${command}" takes at most one REGISTRY. See 'ctrexec ${command} --help'.`, { field: "argv" });
  return rest[0] ?? DEFAULT_REGISTRY;
}

const stdinIsTerminal = () => process.stdin.isTTY === true;

async function credentialsFrom(p: Parsed, ctx: Context): Promise<{ username: string; password: string }> {
  const fromStdin = p.flags.has("password-stdin");
  let password = p.values.get("password");
  let username = p.values.get("username");
  if (password !== undefined && fromStdin) {
    throw new InvalidArgumentError("--password and --password-stdin cannot be used together", { field: "--password-stdin" });
  }
  if (fromStdin && username === undefined) {
    throw new InvalidArgumentError("--password-stdin needs --username (stdin holds the password)", { field: "--username" });
  }
  if (password !== undefined) ctx.stderr.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n");
  if (username === undefined) {
    if (!stdinIsTerminal()) throw new InvalidArgumentError("no terminal to ask for a user name: give it with --username", { field: "--username" });
    username = (await readLine(process.stdin, ctx.stderr, "Username: ")).trim();
  }
  if (fromStdin) password = await readAll(process.stdin);
  else if (password === undefined) {
    if (!stdinIsTerminal()) {
      throw new InvalidArgumentError("no terminal to ask for the password: give it with --password-stdin", { field: "--password-stdin" });
    }
    password = await readSecret(process.stdin as PromptInput, ctx.stderr, "Password: ");
  }
  if (username === "") throw new InvalidArgumentError("the user name is empty", { field: "--username" });
  if (password === "") throw new InvalidArgumentError("the password is empty", { field: fromStdin ? "--password-stdin" : "--password" });
  return { username, password };
}

export async function loginCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, LOGIN_OPTIONS, "login");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(LOGIN_HELP);
    return 0;
  }
  const host = registryArg(p.rest, "login");
  const credentials = await credentialsFrom(p, ctx);
  const path = await loginRegistry(host, credentials, { insecureRegistries: ctx.insecureRegistries });
  ctx.stderr.write(`WARNING! Your password is stored unencrypted in ${path}.\n`);
  ctx.stdout.write("Login Succeeded\n");
  return 0;
}

export async function logoutCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, LOGOUT_OPTIONS, "logout");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(LOGOUT_HELP);
    return 0;
  }
  const host = registryArg(p.rest, "logout");
  const removed = await logoutRegistry(host);
  ctx.stdout.write(removed ? `Removing login credentials for ${host}\n` : `Not logged in to ${host}\n`);
  return 0;
}
