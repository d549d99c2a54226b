/** A registry's error responses (the distribution spec's `errors` document) as words for a message. */

/** C0 and C1 control characters and DEL: what a terminal would act on rather than print. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it matches
const CONTROL = /[\x00-\x1f\x7f-\x9f]/g;

/**
 * Text a registry, token service or storage host sent, made safe for a message: one line, and no control
 * characters, so that an escape sequence in it cannot move the cursor or rewrite the line it is printed on.
 */
export function printable(text: string): string {
  return text.replace(/\s+/g, " ").replace(CONTROL, "").trim();
}

/** The `errors` document of the distribution spec as one line: "MANIFEST_UNKNOWN: manifest unknown". */
export function registryMessage(body: Buffer): string {
  const text = body.toString("utf8").trim();
  if (text === "") return "";
  try {
    const doc = JSON.parse(text) as { errors?: unknown; details?: unknown; error?: unknown; error_description?: unknown };
    if (Array.isArray(doc.errors)) {
      const parts = doc.errors
        .filter((e): e is Record<string, unknown> => typeof e === "object" && e !== null)
        .map((e) =>
          [e["code"], e["message"]]
            .filter((x): x is string => typeof x === "string")
            .map(printable)
            .filter((x) => x !== "")
            .join(": "),
        )
        .filter((s) => s !== "");
      if (parts.length > 0) return parts.join("; ").slice(0, 300);
    }
    // A token service's: Docker's ({"details": ...}) or OAuth2's ({"error": ..., "error_description": ...}).
    const said = [doc.details, doc.error_description ?? doc.error]
      .filter((x): x is string => typeof x === "string")
      .map(printable)
      .filter((x) => x !== "");
    if (said.length > 0) return said.join(": ").slice(0, 300);
  } catch {
    // Not JSON: a proxy's or object store's page.
  }
  return printable(text).slice(0, 200);
}

/** The `code`s of an errors document ("NAME_UNKNOWN"...). */
export function registryCodes(body: Buffer): string[] {
  try {
    const doc = JSON.parse(body.toString("utf8")) as { errors?: unknown };
    if (!Array.isArray(doc.errors)) return [];
    return doc.errors
      .map((e) => (typeof e === "object" && e !== null ? (e as Record<string, unknown>)["code"] : undefined))
      .filter((c): c is string => typeof c === "string");
  } catch {
    return [];
  }
}
