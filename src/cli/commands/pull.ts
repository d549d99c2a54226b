import { InvalidArgumentError, pullImage } from "../../index.js";
import { type OptionSpec, optionsHelp, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS, openClient } from "../context.js";
import { parsePlatform, withPull } from "../pulling.js";

const OPTIONS: OptionSpec[] = [
  { name: "platform", kind: "value", arg: "OS/ARCH[/VARIANT]", help: "the platform to pull from an index (default: this host's)" },
  { name: "quiet", short: "q", kind: "flag", help: "print only the digest" },
  { name: "snapshotter", kind: "value", arg: "NAME", help: "containerd snapshotter to unpack into (default overlayfs)" },
  ...GLOBAL_OPTIONS,
];

export const PULL_HELP = `Usage: ctrexec pull [OPTIONS] REF

Pull an image from a registry into containerd's store (the namespace's), unpacked and ready
for \`ctrexec run --image REF\` (and for \`ctr run\`). REF as docker spells it: alpine is
docker.io/library/alpine:latest; HOST[:PORT]/NAME[:TAG][@DIGEST] names another registry.

Progress goes to stderr: on a terminal one line per layer, redrawn in place; otherwise one
line per change of a blob's state. Then stdout gets one line: the digest REF resolved to
(what \`ctrexec images\` shows), so \`ctrexec pull -q REF\` can be captured by a script.

Credentials come from \`ctrexec login\` (docker's config.json: $DOCKER_CONFIG, else ~/.docker).
Registries are reached over HTTPS (system CAs and NODE_EXTRA_CA_CERTS); plain HTTP only for
loopback ones and those named by --insecure-registry.

Options:
${optionsHelp(OPTIONS)}

Examples:
  ctrexec pull alpine:3.20
  ctrexec pull --platform linux/arm64/v8 docker.io/library/busybox:latest
  digest=$(ctrexec pull -q 127.0.0.1:5000/tools/build:1)
  ctrexec --insecure-registry registry.lan:5000 pull registry.lan:5000/app:dev
`;

export async function pullCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, OPTIONS, "pull");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(PULL_HELP);
    return 0;
  }
  const [ref, ...extra] = p.rest;
  if (!ref || extra.length) throw new InvalidArgumentError(`"ctrexec pull" requires exactly one REF. See 'ctrexec pull --help'.`, { field: "argv" });
  const platform = p.values.get("platform");
  const snapshotter = p.values.get("snapshotter");
  const quiet = p.flags.has("quiet");
  await using client = openClient(ctx);
  const digest = await withPull(
    ctx,
    {
      quiet,
      header: `Pulling ${ref}`,
      ...(platform !== undefined ? { platform: parsePlatform(platform) } : {}),
      ...(snapshotter !== undefined ? { snapshotter } : {}),
    },
    async (options) => {
      const image = await pullImage(client, ref, options);
      if (!quiet) ctx.stderr.write(`Pulled ${image.name}\n`);
      // The digest REF resolved to at the registry (an index's, for a multi-platform image), as docker's
      // "Digest:" line and the image record have it.
      return image.target.digest;
    },
  );
  ctx.stdout.write(`${digest}\n`);
  return 0;
}
