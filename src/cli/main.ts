#!/usr/bin/env node
/**
 * The ctrexec command line. For now: `version` (client and daemon) and the global flags; `run`, `exec`, `ps`,
 * `kill`, `prune` and `info` arrive with the executor. Exit code 125 means ctrexec itself failed.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ContainerdClient } from "../containerd/client.js";
import { CtrexecError } from "../errors.js";

const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };

const usage = `Usage: ctrexec [--address SOCKET] [--namespace NS] COMMAND

Commands:
  version     print the versions of ctrexec and of the containerd it talks to

Global options:
  --address SOCKET   containerd socket (default $CONTAINERD_ADDRESS or /run/containerd/containerd.sock)
  --namespace NS     containerd namespace (default $CONTAINERD_NAMESPACE or ctrexec)
  --version          print ctrexec's version
  -h, --help         this text
`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      address: { type: "string" },
      namespace: { type: "string" },
      version: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`ctrexec ${pkg.version}\n`);
    return 0;
  }
  const [command] = positionals;
  switch (command) {
    case "version": {
      await using client = new ContainerdClient({ address: values.address, namespace: values.namespace });
      const server = await client.version();
      process.stdout.write(`ctrexec ${pkg.version}\ncontainerd ${server.version} (${server.revision}) at ${client.address}\n`);
      return 0;
    }
    case undefined:
      process.stderr.write(usage);
      return 125;
    default:
      process.stderr.write(`ctrexec: unknown command "${command}"\nSee 'ctrexec --help'.\n`);
      return 125;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const message = CtrexecError.is(err) || err instanceof Error ? err.message : String(err);
    process.stderr.write(`ctrexec: ${message}\n`);
    process.exitCode = 125;
  },
);
