/** A registry's error responses (the distribution spec's `errors` document) as words for a message. */

/** The `errors` document of the distribution spec as one line: "MANIFEST_UNKNOWN: manifest unknown". */
export function registryMessage(body: Buffer): string {
  const text = body.toString("utf8").trim();
  if (text === "") return "";
  try {
    const doc = JSON.parse(text) as { errors?: unknown; details?: unknown };
    if (Array.isArray(doc.errors)) {
      const parts = doc.errors
        .filter((e): e is Record<string, unknown> => typeof e === "object" && e !== null)
        .map((e) => [e["code"], e["message"]].filter((x) => typeof x === "string" && x !== "").join(": "))
        .filter((s) => s !== "");
      if (parts.length > 0) return parts.join("; ").slice(0, 300);
    }
  } catch {
    // Not JSON: a proxy's or object store's page.
  }
  return text.replace(/\s+/g, " ").slice(0, 200);
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
