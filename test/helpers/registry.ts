import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, link, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * A real OCI registry for tests: Debian's docker-registry (distribution 2.8) as a plain child process on a free
 * loopback port, with its own config, storage and (when asked) htpasswd file and self-signed TLS certificate,
 * all in one tmp dir that `stop` removes. Images get into it with skopeo, the way a user would push them.
 */
export interface TestRegistry {
  /** "127.0.0.1:PORT", the registry part of an image reference. */
  host: string;
  /** "http://127.0.0.1:PORT" or "https://…". */
  url: string;
  /** The self-signed CA that signed the server's certificate (tls only): PEM text and a file holding it. */
  caPem?: string;
  caFile?: string;
  /** Where the registry keeps its config, storage and certificates. */
  dir: string;
  /**
   * Pushes an image with skopeo: `source` is an OCI layout directory (`oci:DIR[:tag]`, a tag in index.json's
   * annotations picks one entry), an OCI archive (`oci-archive:FILE`) or any skopeo transport reference; an index
   * is pushed whole (`--all`). Blobs and manifests go as they are (`--preserve-digests`). Returns the digest of
   * the manifest (or index) pushed.
   */
  push(source: string, repoTag: string): Promise<string>;
  stop(): Promise<void>;
}

export interface RegistryOptions {
  /** htpasswd (Basic) auth with this one user. */
  auth?: { username: string; password: string };
  /** Serve HTTPS with a certificate for 127.0.0.1 and localhost, signed by a fresh self-signed CA. */
  tls?: boolean;
  /** Parent directory for the registry's own tmp dir (default: the system tmp dir). */
  dir?: string;
}

const REGISTRY_BIN = "/usr/bin/docker-registry";
const SETPRIV = "/usr/bin/setpriv";

/** A port nothing listens on right now (the registry binds it a moment later; `startRegistry` retries a clash). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** A CA and a server certificate it signed, for IP 127.0.0.1 and DNS localhost. */
async function makeCertificates(dir: string): Promise<{ caFile: string; cert: string; key: string }> {
  const caKey = join(dir, "ca.key");
  const caFile = join(dir, "ca.crt");
  const key = join(dir, "server.key");
  const csr = join(dir, "server.csr");
  const cert = join(dir, "server.crt");
  const ext = join(dir, "server.ext");
  await run(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", caKey, "-out", caFile, "-days", "2"].concat(["-subj", "/CN=ctrexec test CA"]),
  );
  await run("openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"]);
  await writeFile(
    ext,
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  await run("openssl", ["x509", "-req", "-in", csr, "-CA", caFile, "-CAkey", caKey, "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext]);
  return { caFile, cert, key };
}

function config(o: { port: number; storage: string; htpasswd?: string; tls?: { cert: string; key: string } }): string {
  // Distribution reads YAML; JSON is YAML, and needs no quoting rules of its own.
  return JSON.stringify({
    version: 0.1,
    log: { level: "warn", accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: o.storage }, delete: { enabled: true } },
    http: {
      addr: `127.0.0.1:${o.port}`,
      // Without a secret every start warns and makes a random one; a fixed one per registry is as good for a test.
      secret: randomBytes(16).toString("hex"),
      ...(o.tls ? { tls: { certificate: o.tls.cert, key: o.tls.key } } : {}),
    },
    ...(o.htpasswd ? { auth: { htpasswd: { realm: "ctrexec-test", path: o.htpasswd } } } : {}),
  });
}

/** The status of GET /v2/, or undefined when nothing answers. */
function probe(url: string, ca: string | undefined): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = (url.startsWith("https:") ? httpsRequest : httpRequest)(
      `${url}/v2/`,
      { method: "GET", timeout: 2000, ...(ca ? { ca } : {}) },
      (res) => {
        res.resume();
        resolve(res.statusCode);
      },
    );
    req.on("error", () => resolve(undefined));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

async function launch(
  configFile: string,
  url: string,
  ca: string | undefined,
): Promise<{ child: ChildProcess; log: () => string } | { clash: boolean; log: string }> {
  // A plain child (no systemd, no daemonizing; it logs to stderr) that the kernel kills should this process die
  // without calling stop(): setpriv sets the parent-death signal and execs the registry under the same pid.
  const argv = [REGISTRY_BIN, "serve", configFile];
  const child = existsSync(SETPRIV)
    ? spawn(SETPRIV, ["--pdeathsig", "SIGKILL", "--", ...argv], { stdio: ["ignore", "ignore", "pipe"] })
    : spawn(REGISTRY_BIN, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    log = (log + s).slice(-8000);
  });
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (exited) return { clash: /address already in use/.test(log), log };
    const status = await probe(url, ca);
    if (status === 200 || status === 401) return { child, log: () => log };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGKILL");
  return { clash: false, log: `${log}\n(GET ${url}/v2/ did not answer within 15 s)` };
}

/**
 * The skopeo source for `DIR[:TAG]`, an OCI layout directory: `oci:DIR:TAG`, except for Docker media types, which
 * skopeo's oci transport refuses in index.json: those go through a `dir:` copy (manifest.json, one
 * `<hex>.manifest.json` per manifest of a list, blobs by hex digest), hard-linked where possible.
 */
async function skopeoSource(source: string, scratch: string): Promise<string> {
  const m = /^(.*?)(?::([\w][\w.-]*))?$/.exec(source);
  const layout = m?.[1] ?? source;
  const tag = m?.[2];
  const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as {
    manifests: { mediaType: string; digest: string; annotations?: Record<string, string> }[];
  };
  const top = index.manifests.find((d) => tag === undefined || d.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!top?.mediaType.startsWith("application/vnd.docker.")) return `oci:${source}`;
  const out = join(scratch, `dir-${randomBytes(4).toString("hex")}`);
  await mkdir(out);
  const blob = (digest: string) => join(layout, "blobs", "sha256", digest.slice(7));
  const put = (digest: string, name = digest.slice(7)) => link(blob(digest), join(out, name)).catch(() => copyFile(blob(digest), join(out, name)));
  await writeFile(join(out, "version"), "Directory Transport Version: 1.1\n");
  await put(top.digest, "manifest.json");
  const manifestOf = async (digest: string) => {
    const man = JSON.parse(await readFile(blob(digest), "utf8")) as { config: { digest: string }; layers: { digest: string }[] };
    for (const d of [man.config, ...man.layers]) await put(d.digest);
  };
  if (top.mediaType.includes("list")) {
    const list = JSON.parse(await readFile(blob(top.digest), "utf8")) as { manifests: { digest: string }[] };
    for (const d of list.manifests) {
      await put(d.digest, `${d.digest.slice(7)}.manifest.json`);
      await manifestOf(d.digest);
    }
  } else await manifestOf(top.digest);
  return `dir:${out}`;
}

export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(options.dir ?? tmpdir(), "ctrexec-registry-"));
  try {
    const storage = join(dir, "storage");
    await mkdir(storage);
    let htpasswd: string | undefined;
    if (options.auth) {
      htpasswd = join(dir, "htpasswd");
      // distribution accepts only bcrypt entries.
      const { stdout } = await run("htpasswd", ["-Bbn", options.auth.username, options.auth.password]);
      await writeFile(htpasswd, stdout);
    }
    let tls: { caFile: string; cert: string; key: string } | undefined;
    let caPem: string | undefined;
    let certDir: string | undefined;
    if (options.tls) {
      const certs = join(dir, "certs");
      await mkdir(certs);
      tls = await makeCertificates(certs);
      caPem = await readFile(tls.caFile, "utf8");
      // skopeo's --dest-cert-dir trusts every *.crt in the directory, and reads *.cert/*.key as a client certificate.
      certDir = join(dir, "skopeo-certs");
      await mkdir(certDir);
      await writeFile(join(certDir, "ca.crt"), caPem);
    }
    const policy = join(dir, "policy.json");
    await writeFile(policy, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
    const configFile = join(dir, "config.yml");

    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      const host = `127.0.0.1:${port}`;
      const url = `${tls ? "https" : "http"}://${host}`;
      await writeFile(configFile, config({ port, storage, ...(htpasswd ? { htpasswd } : {}), ...(tls ? { tls } : {}) }));
      const started = await launch(configFile, url, caPem);
      if (!("child" in started)) {
        if (started.clash && attempt < 5) continue;
        throw new Error(`docker-registry did not start: ${started.log}`);
      }
      const { child } = started;
      let stopped = false;
      return {
        host,
        url,
        dir,
        ...(tls && caPem ? { caPem, caFile: tls.caFile } : {}),
        async push(source, repoTag) {
          const digestFile = join(dir, `digest-${randomBytes(4).toString("hex")}`);
          const args = ["--policy", policy, "copy", "--quiet", "--all", "--preserve-digests", "--digestfile", digestFile];
          args.push(certDir ? `--dest-cert-dir=${certDir}` : "--dest-tls-verify=false");
          if (options.auth) args.push("--dest-creds", `${options.auth.username}:${options.auth.password}`);
          const src = /^[a-z][a-z-]*:/.test(source) ? source : await skopeoSource(source, dir);
          try {
            await run("skopeo", [...args, src, `docker://${host}/${repoTag}`], {
              // skopeo keeps temporary copies of blobs under TMPDIR; ours goes with the registry.
              env: { ...process.env, TMPDIR: dir },
              maxBuffer: 16 << 20,
            });
            return (await readFile(digestFile, "utf8")).trim();
          } catch (err) {
            const e = err as { stderr?: string; message: string };
            throw new Error(`skopeo copy ${src} -> ${host}/${repoTag} failed: ${e.stderr || e.message}`);
          } finally {
            await rm(digestFile, { force: true });
            if (src.startsWith(`dir:${dir}/`)) await rm(src.slice(4), { recursive: true, force: true });
          }
        },
        async stop() {
          if (stopped) return;
          stopped = true;
          if (child.exitCode === null && child.signalCode === null) {
            const exited = new Promise((r) => child.once("exit", r));
            child.kill("SIGTERM");
            const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
            await exited;
            clearTimeout(timer);
          }
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
