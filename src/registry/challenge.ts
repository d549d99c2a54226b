/**
 * WWW-Authenticate parsing (RFC 7235): one header may carry several challenges, each a scheme with either a
 * token68 or comma-separated auth-params whose values are tokens or quoted strings. Registries send
 * `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`, sometimes several in one header.
 */

export interface Challenge {
  /** Lower-cased: "basic", "bearer". */
  scheme: string;
  /** Parameter names lower-cased; values unquoted. */
  params: Record<string, string>;
  token68?: string;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const TOKEN68_CHAR = /[A-Za-z0-9\-._~+/]/;

export function parseChallenges(header: string | readonly string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  if (typeof header !== "string") return header.flatMap((h) => parseChallenges(h));
  const s = header;
  let i = 0;
  const out: Challenge[] = [];
  const skipWs = () => {
    while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < s.length && TOKEN_CHAR.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  const quoted = (): string => {
    i++; // opening quote
    let v = "";
    while (i < s.length && s[i] !== '"') {
      if (s[i] === "\\" && i + 1 < s.length) i++;
      v += s[i];
      i++;
    }
    i++; // closing quote (or end)
    return v;
  };
  /** Whether an auth-param (`name BWS "=" BWS value`) starts at i, rather than a token68 or a new challenge. */
  const paramAhead = (): boolean => {
    const save = i;
    const name = token();
    skipWs();
    const isParam = name !== "" && s[i] === "=" && !/^=*\s*(,|$)/.test(s.slice(i));
    i = save;
    return isParam;
  };
  while (i < s.length) {
    while (i < s.length && (s[i] === "," || s[i] === " " || s[i] === "\t")) i++;
    const scheme = token();
    if (scheme === "") {
      // Not a token where a scheme must be: skip to the next comma and try again there.
      while (i < s.length && s[i] !== ",") i++;
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    skipWs();
    if (i < s.length && s[i] !== "," && !paramAhead()) {
      const start = i;
      while (i < s.length && TOKEN68_CHAR.test(s[i]!)) i++;
      while (i < s.length && s[i] === "=") i++;
      if (i > start) challenge.token68 = s.slice(start, i);
      skipWs();
      continue;
    }
    // auth-params until something that is not one: then a new challenge starts.
    for (;;) {
      skipWs();
      while (i < s.length && s[i] === ",") {
        i++;
        skipWs();
      }
      if (i >= s.length || !paramAhead()) break;
      const name = token().toLowerCase();
      skipWs();
      i++; // "="
      skipWs();
      const value = s[i] === '"' ? quoted() : token();
      // First one wins, as a repeated parameter is invalid; "__proto__" would reach the object's prototype.
      if (name !== "__proto__" && !Object.hasOwn(challenge.params, name)) challenge.params[name] = value;
    }
  }
  return out;
}
