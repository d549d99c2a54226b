/**
 * Image references normalized as docker does it (github.com/distribution/reference, ParseNormalizedNamed +
 * TagNameOnly), so that `alpine`, `docker.io/alpine` and `index.docker.io/library/alpine:latest` name the same
 * image record that ctr and nerdctl would write.
 */
import { InvalidArgumentError } from "../errors.js";
import { DIGEST_ALGORITHMS } from "./digest.js";

export interface ImageReference {
  /** "docker.io", "127.0.0.1:5000", "localhost:5000" */
  domain: string;
  /** "library/alpine" */
  repository: string;
  /** "latest" when neither tag nor digest was given */
  tag?: string;
  /** "sha256:<64 hex>" */
  digest?: string;
  /** Normalized: "docker.io/library/alpine:latest", "h:5000/x/y@sha256:..", "h/x:t@sha256:.." */
  name: string;
}

export const DOCKER_HUB_DOMAIN = "docker.io";
const LEGACY_HUB_DOMAIN = "index.docker.io";
const OFFICIAL_PREFIX = "library/";
const NAME_MAX = 255;

// The grammar of distribution/reference's regexp.go, piece by piece, so that each can be checked against it.
const alphanumeric = "[a-z0-9]+";
const separator = "(?:[._]|__|[-]+)";
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`;
const remoteName = `${pathComponent}(?:/${pathComponent})*`;
const domainNameComponent = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const domainName = `${domainNameComponent}(?:\\.${domainNameComponent})*`;
const ipv6address = "\\[(?:[a-fA-F0-9:]+)\\]";
const domainAndPort = `(?:${domainName}|${ipv6address})(?::[0-9]+)?`;
const tagPat = "[\\w][\\w.-]{0,127}";
const digestPat = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}";

const referenceRe = new RegExp(`^(${domainAndPort})/(${remoteName})(?::(${tagPat}))?(?:@(${digestPat}))?$`);
const domainRe = new RegExp(`^${domainAndPort}$`);
const identifierRe = /^[a-f0-9]{64}$/;

function bad(ref: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`invalid image reference ${JSON.stringify(ref)}: ${why}`, { field: "ref" });
}

/**
 * splitDockerDomain: the first component is a registry when it contains "." or ":", is "localhost", or has an
 * upper-case letter (repository names never do); otherwise the name is on Docker Hub, where a one-component
 * name is an official image under "library/".
 */
function splitDomain(name: string): [domain: string, remainder: string] {
  const slash = name.indexOf("/");
  if (slash === -1) return [DOCKER_HUB_DOMAIN, OFFICIAL_PREFIX + name];
  const first = name.slice(0, slash);
  const rest = name.slice(slash + 1);
  let domain: string;
  let remainder: string;
  if (first === LEGACY_HUB_DOMAIN) [domain, remainder] = [DOCKER_HUB_DOMAIN, rest];
  else if (first === "localhost" || /[.:]/.test(first) || first.toLowerCase() !== first) [domain, remainder] = [first, rest];
  else [domain, remainder] = [DOCKER_HUB_DOMAIN, name];
  if (domain === DOCKER_HUB_DOMAIN && !remainder.includes("/")) remainder = OFFICIAL_PREFIX + remainder;
  return [domain, remainder];
}

/** Parses and normalizes `ref` as docker does; InvalidArgumentError (field "ref") says what is wrong with it. */
export function parseReference(ref: string): ImageReference {
  if (typeof ref !== "string" || ref === "") throw bad(String(ref), "it is empty: give a name such as alpine or registry.example:5000/team/app:1.0");
  // Bounds the regular expressions' work on hostile input; no valid reference comes near it.
  if (ref.length > 1024) throw bad(`${ref.slice(0, 40)}…`, "it is longer than any valid reference");
  if (identifierRe.test(ref)) throw bad(ref, "a 64-character hex string is an image ID, not a name; add the repository (name@sha256:…)");
  const [domain, remainder] = splitDomain(ref);
  const colon = remainder.indexOf(":");
  const at = remainder.indexOf("@");
  const cut = [colon, at].filter((i) => i >= 0);
  const remote = cut.length > 0 ? remainder.slice(0, Math.min(...cut)) : remainder;
  if (remote.toLowerCase() !== remote) throw bad(ref, `the repository name must be lowercase (${remote.toLowerCase()})`);
  const m = referenceRe.exec(`${domain}/${remainder}`);
  if (!m) throw bad(ref, explain(domain, remainder));
  const port = /:(\d+)$/.exec(domain)?.[1];
  // The grammar takes any digits; a URL (and so every request) cannot.
  if (port !== undefined && !(Number(port) >= 1 && Number(port) <= 65535)) throw bad(ref, `port ${port} of ${domain} is not 1 to 65535`);
  const repository = m[2]!;
  const tag = m[3];
  const digest = m[4];
  if (domain.length + 1 + repository.length > NAME_MAX) throw bad(ref, `the name is longer than ${NAME_MAX} characters`);
  if (digest !== undefined) checkDigest(ref, digest);
  const out: ImageReference = { domain, repository, name: "" };
  if (tag !== undefined) out.tag = tag;
  if (digest !== undefined) out.digest = digest;
  else if (tag === undefined) out.tag = "latest";
  out.name = `${domain}/${repository}${out.tag !== undefined ? `:${out.tag}` : ""}${digest !== undefined ? `@${digest}` : ""}`;
  return out;
}

function checkDigest(ref: string, digest: string): void {
  const [algorithm, hex] = digest.split(":") as [string, string];
  const length = DIGEST_ALGORITHMS[algorithm];
  if (length === undefined) throw bad(ref, `unsupported digest algorithm ${algorithm} (use sha256)`);
  if (hex.length !== length || !/^[a-f0-9]+$/.test(hex)) throw bad(ref, `a ${algorithm} digest is ${length} lowercase hex characters`);
}

/** The most useful thing to say about a reference the grammar refused. */
function explain(domain: string, remainder: string): string {
  if (!domainRe.test(domain)) return `${JSON.stringify(domain)} is not a valid registry host`;
  const at = remainder.indexOf("@");
  const beforeDigest = at >= 0 ? remainder.slice(0, at) : remainder;
  if (at >= 0 && !new RegExp(`^${digestPat}$`).test(remainder.slice(at + 1))) return "the digest must look like sha256:<64 hex characters>";
  const colon = beforeDigest.lastIndexOf(":");
  if (colon >= 0 && !beforeDigest.slice(colon + 1).includes("/")) {
    const tag = beforeDigest.slice(colon + 1);
    if (!new RegExp(`^${tagPat}$`).test(tag)) return "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'";
  }
  return "a repository name is lowercase letters and digits in components separated by '/', with '.', '_', '__' or '-' inside a component";
}

/** Whether `s` is a registry host as references name it ("host", "host:port", "[v6]:port"). */
export function isRegistryDomain(s: string): boolean {
  return domainRe.test(s);
}
