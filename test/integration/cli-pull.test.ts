import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ContainerdClient } from "../../src/containerd/client.js";
import { NotFoundError } from "../../src/errors.js";
import { ensureDefaultRootfs } from "../../src/rootfs/default-rootfs.js";
import { removeRuntimeNamespaceDirs } from "../helpers/env.js";
import { treeEntries, writeOciArchive } from "../helpers/oci-image.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";

const run = promisify(execFile);
const bin = fileURLToPath(new URL("../../src/cli/ctrexec.mjs", import.meta.url));
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const short = (digest: string) => digest.slice(7, 19);

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** `ctrexec ARGS` to completion, stdin from `input` (closed), stdout and stderr on pipes. */
function ctrexec(args: string[], options: { env?: Record<string, string>; input?: string } = {}): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [bin, ...args], { env: { ...process.env, ...options.env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    child.stdin!.end(options.input ?? "");
  });
}

/** A loopback port nothing listens on (for "unreachable"). */
function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe("ctrexec pull, run --pull, login and logout (real binary, real registry, real containerd)", () => {
  let work: string;
  let registry: TestRegistry;
  let authRegistry: TestRegistry;
  let archive: string;
  /** What the registries' t19d/small:1 and t19d/private:1 resolve to, as skopeo pushed them. */
  let digest: string;
  let privateDigest: string;
  let layers: string[];
  const namespaces: string[] = [];
  const clients = new Map<string, ContainerdClient>();
  let nsCount = 0;

  /** A fresh namespace (prefix t19d-), removed with all it holds at the end. */
  function freshNamespace(): { ns: string; client: ContainerdClient } {
    const ns = `t19d-${process.pid}-${++nsCount}`;
    namespaces.push(ns);
    const client = new ContainerdClient({ namespace: ns });
    clients.set(ns, client);
    return { ns, client };
  }

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "ctrexec-t19d-"));
    const rootfs = await ensureDefaultRootfs(join(work, "state"));
    const base = await treeEntries(rootfs, (rel) => rel === "etc/hosts" || rel === "etc/resolv.conf");
    archive = join(work, "small.tar");
    await writeOciArchive(archive, "t19d/small:1", [base, [{ type: "file", path: "hello.txt", content: "hello from the registry\n" }]], {
      Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
      Cmd: ["cat", "/hello.txt"],
    });
    registry = await startRegistry({ dir: work });
    authRegistry = await startRegistry({ dir: work, auth: { username: "ci", password: "s3cret" } });
    digest = await registry.push(`oci-archive:${archive}`, "t19d/small:1");
    privateDigest = await authRegistry.push(`oci-archive:${archive}`, "t19d/private:1");
    const manifest = JSON.parse(
      (await run("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/t19d/small:1`])).stdout,
    ) as {
      layers: { digest: string }[];
    };
    layers = manifest.layers.map((l) => l.digest);
    assert.equal(layers.length, 2);
  });

  /** No lease, container or task left in any namespace of ours: a pull holds its lease only while it runs. */
  afterEach(async () => {
    for (const client of clients.values()) {
      assert.deepEqual(
        (await client.leases.list()).map((l) => l.id),
        [],
        `leases left in ${client.namespace}`,
      );
      assert.deepEqual(
        (await client.containers.list()).map((c) => c.id),
        [],
        `containers left in ${client.namespace}`,
      );
    }
  });

  after(async () => {
    for (const ns of namespaces) {
      const client = clients.get(ns)!;
      for (const image of await client.images.list().catch(() => []))
        await run("ctr", ["-n", ns, "images", "rm", "--sync", image.name]).catch(() => {});
      // Leaves first: a snapshot with children cannot go.
      for (let i = 0; i < 40; i++) {
        const snaps = await client.snapshots.list("overlayfs").catch(() => []);
        if (snaps.length === 0) break;
        const parents = new Set(snaps.map((x) => x.parent));
        for (const x of snaps.filter((x) => !parents.has(x.name)))
          await client.snapshots.remove({ snapshotter: "overlayfs", key: x.name }).catch(() => {});
        await delay(100);
      }
      let deleted = false;
      for (let i = 0; i < 30 && !deleted; i++) {
        deleted = await client.namespaces.delete(ns).then(
          () => true,
          (e: unknown) => e instanceof NotFoundError,
        );
        if (!deleted) await delay(100);
      }
      if (deleted) await removeRuntimeNamespaceDirs(ns);
      await client.close();
    }
    await registry?.stop();
    await authRegistry?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("on a pipe: progress on stderr, one line per blob state change; the digest last, on stdout", async () => {
    const { ns, client } = freshNamespace();
    const ref = `${registry.host}/t19d/small:1`;
    const r = await ctrexec(["--namespace", ns, "pull", ref]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${digest}\n`);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines[0], `Pulling ${ref}`);
    assert.equal(lines.at(-1), `Pulled ${ref}`);
    assert.ok(!r.stderr.includes("\x1b"), "no escape codes on a pipe");
    for (const layer of layers) {
      const mine = lines.filter((l) => l.startsWith(`layer ${short(layer)}: `)).map((l) => l.slice(`layer ${short(layer)}: `.length));
      assert.equal(mine.at(-1), "Pull complete", mine.join(" | "));
      assert.ok(
        mine.some((l) => l.startsWith("Downloading")),
        mine.join(" | "),
      );
      const states = mine.map((l) => l.split(" (")[0]!.replace(/ \S+B$/, ""));
      for (let i = 1; i < states.length; i++) assert.notEqual(states[i], states[i - 1], `a state repeated: ${mine.join(" | ")}`);
    }
    // stdout and stderr together, as on a terminal: the digest is the last line.
    const both = await run("sh", ["-c", '"$0" "$@" 2>&1', process.execPath, bin, "--namespace", ns, "pull", ref]);
    assert.equal(both.stdout.trimEnd().split("\n").at(-1), digest);
    assert.match(both.stdout, new RegExp(`layer ${short(layers[0]!)}: Already exists`));
    const record = await client.images.get(ref);
    assert.equal(record.target?.digest, digest);
  });

  it("-q prints only the digest, on a first pull and on one that finds everything present", async () => {
    const { ns } = freshNamespace();
    const ref = `${registry.host}/t19d/small:1`;
    for (let i = 0; i < 2; i++) {
      const r = await ctrexec(["--namespace", ns, "pull", "-q", ref]);
      assert.deepEqual([r.code, r.stdout, r.stderr], [0, `${digest}\n`, ""]);
    }
  });

  it("run --image pulls a missing image (default --pull missing) on a fresh namespace; --pull never then runs it", async () => {
    const { ns, client } = freshNamespace();
    const state = join(work, `state-${ns}`);
    const ref = `${registry.host}/t19d/small:1`;
    const globals = ["--namespace", ns, "--root", state];
    const env = { CTREXEC_FIFO_ROOT: join(state, "fifo") };
    const first = await ctrexec([...globals, "run", "--network", "none", "--image", ref], { env });
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, "hello from the registry\n", "stdout is the container's alone");
    assert.match(first.stderr, new RegExp(`^Pulling ${ref}\n`));
    assert.match(first.stderr, new RegExp(`layer ${short(layers[1]!)}: Pull complete`));
    assert.equal((await client.images.get(ref)).target?.digest, digest);

    const never = await ctrexec([...globals, "run", "--network", "none", "--pull", "never", "--image", ref, "cat", "/hello.txt"], { env });
    assert.deepEqual([never.code, never.stdout, never.stderr], [0, "hello from the registry\n", ""]);
    const present = await ctrexec([...globals, "run", "--network", "none", "--image", ref, "true"], { env });
    assert.deepEqual([present.code, present.stderr], [0, ""], "missing: a present image is not pulled");
    const always = await ctrexec([...globals, "run", "--network", "none", "--pull", "always", "--image", ref, "true"], { env });
    assert.equal(always.code, 0, always.stderr);
    assert.match(always.stderr, new RegExp(`layer ${short(layers[0]!)}: Already exists`));
    const quiet = await ctrexec([...globals, "run", "-q", "--network", "none", "--pull", "always", "--image", ref, "true"], { env });
    assert.deepEqual([quiet.code, quiet.stderr], [0, ""]);
  });

  it("--pull never on a missing image: 125, one line saying what to do, nothing pulled", async () => {
    const { ns, client } = freshNamespace();
    const state = join(work, `state-${ns}`);
    const ref = `${registry.host}/t19d/small:1`;
    const r = await ctrexec(["--namespace", ns, "--root", state, "run", "--pull", "never", "--image", ref, "true"], {
      env: { CTREXEC_FIFO_ROOT: join(state, "fifo") },
    });
    assert.equal(r.code, 125);
    assert.equal(r.stderr.split("\n").length, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^ctrexec: image ${ref} is not in namespace ${ns} and --pull never forbids pulling it: run \`ctrexec pull ${ref}\``),
    );
    assert.deepEqual(await client.images.list(), []);
    const bad = await ctrexec(["--namespace", ns, "run", "--pull", "sometimes", "--image", ref, "true"]);
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /^ctrexec: invalid argument "sometimes" for "--pull": use missing, always or never\n$/);
  });

  it("registry errors exit 125 with one line that says what to do: not found, unauthorized, unreachable", async () => {
    const { ns, client } = freshNamespace();
    const expectOneLine = (r: Result, re: RegExp) => {
      assert.equal(r.code, 125, r.stderr);
      assert.equal(r.stdout, "");
      const errors = r.stderr.split("\n").filter((l) => l.startsWith("ctrexec: "));
      assert.equal(errors.length, 1, r.stderr);
      assert.match(errors[0]!, re);
    };
    expectOneLine(await ctrexec(["--namespace", ns, "pull", "-q", `${registry.host}/t19d/small:nosuchtag`]), /nosuchtag/);
    expectOneLine(await ctrexec(["--namespace", ns, "pull", "-q", `${registry.host}/t19d/nosuchrepo:1`]), /nosuchrepo/);
    const config = await mkdtemp(join(work, "docker-config-"));
    expectOneLine(
      await ctrexec(["--namespace", ns, "pull", "-q", `${authRegistry.host}/t19d/private:1`], { env: { DOCKER_CONFIG: config } }),
      new RegExp(`run \`ctrexec login ${authRegistry.host.replace(/\./g, "\\.")}\``),
    );
    const port = await closedPort();
    expectOneLine(await ctrexec(["--namespace", ns, "pull", "-q", `127.0.0.1:${port}/t19d/small:1`]), /unreachable/);
    assert.deepEqual(await client.images.list(), [], "no image record after a failed pull");
  });

  it("over TLS: trusts the CA of NODE_EXTRA_CA_CERTS, and without it says the certificate is not trusted", async () => {
    const tls = await startRegistry({ dir: work, tls: true });
    try {
      const pushed = await tls.push(`oci-archive:${archive}`, "t19d/tls:1");
      const { ns } = freshNamespace();
      const ref = `${tls.host}/t19d/tls:1`;
      const untrusted = await ctrexec(["--namespace", ns, "pull", "-q", ref]);
      assert.equal(untrusted.code, 125);
      assert.match(untrusted.stderr, /^ctrexec: .*certificate/);
      assert.equal(untrusted.stderr.split("\n").length, 2, untrusted.stderr);
      const trusted = await ctrexec(["--namespace", ns, "pull", "-q", ref], { env: { NODE_EXTRA_CA_CERTS: tls.caFile! } });
      assert.deepEqual([trusted.code, trusted.stdout], [0, `${pushed}\n`], trusted.stderr);
    } finally {
      await tls.stop();
    }
  });

  it("^C cancels a pull (a registry that never answers): exit 130, one line, nothing left", async () => {
    const { ns, client } = freshNamespace();
    const sockets: Socket[] = [];
    let connected!: () => void;
    const firstConnection = new Promise<void>((r) => (connected = r));
    const server = createServer((s) => {
      sockets.push(s);
      connected();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    try {
      const child = spawn(process.execPath, [bin, "--namespace", ns, "pull", `127.0.0.1:${port}/t19d/small:1`], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      await firstConnection;
      child.kill("SIGINT");
      assert.equal(await exited, 130, stderr);
      assert.equal(stdout, "");
      assert.match(stderr, /\nctrexec: pull canceled by SIGINT\n$/);
      assert.deepEqual(await client.images.list(), []);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it("login (--password-stdin) writes docker's config.json (0600), pull then authenticates; logout removes it", async () => {
    const { ns } = freshNamespace();
    const config = await mkdtemp(join(work, "docker-config-"));
    const env = { DOCKER_CONFIG: config };
    const file = join(config, "config.json");
    await writeFile(file, JSON.stringify({ auths: { "other.example:5000": { auth: "eDp5" } }, currentContext: "keep-me" }), { mode: 0o600 });
    const host = authRegistry.host;

    const noTty = await ctrexec(["login", "-u", "ci", host], { env });
    assert.equal(noTty.code, 125);
    assert.match(noTty.stderr, /^ctrexec: no terminal to ask for the password: give it with --password-stdin\n$/);
    const wrong = await ctrexec(["login", "-u", "ci", "--password-stdin", host], { env, input: "nope\n" });
    assert.equal(wrong.code, 125);
    assert.match(wrong.stderr, /^ctrexec: .*refused/m);
    assert.equal(JSON.parse(await readFile(file, "utf8")).auths[host], undefined, "refused credentials are not saved");

    const ok = await ctrexec(["login", "-u", "ci", "--password-stdin", host], { env, input: "s3cret\n" });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "Login Succeeded\n");
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const saved = JSON.parse(await readFile(file, "utf8")) as { auths: Record<string, { auth?: string }>; currentContext?: string };
    assert.equal(Buffer.from(saved.auths[host]!.auth!, "base64").toString(), "ci:s3cret");
    assert.equal(saved.auths["other.example:5000"]?.auth, "eDp5", "other registries' entries are kept");
    assert.equal(saved.currentContext, "keep-me", "other keys are kept");

    const withP = await ctrexec(["login", "-u", "ci", "-p", "s3cret", host], { env });
    assert.equal(withP.code, 0, withP.stderr);
    assert.match(withP.stderr, /^WARNING! Using --password via the CLI is insecure\. Use --password-stdin\.$/m);

    const pulled = await ctrexec(["--namespace", ns, "pull", "-q", `${host}/t19d/private:1`], { env });
    assert.deepEqual([pulled.code, pulled.stdout], [0, `${privateDigest}\n`], pulled.stderr);

    assert.deepEqual(await ctrexec(["logout", host], { env }), { code: 0, stdout: `Removing login credentials for ${host}\n`, stderr: "" });
    assert.equal((JSON.parse(await readFile(file, "utf8")) as { auths: Record<string, unknown> }).auths[host], undefined);
    assert.deepEqual(await ctrexec(["logout", host], { env }), { code: 0, stdout: `Not logged in to ${host}\n`, stderr: "" });
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  describe("on a terminal (tmux)", () => {
    const sock = `ctrexec-t19d-${process.pid}`;
    const tmux = (...args: string[]) =>
      new Promise<string>((resolve, reject) => execFile("tmux", ["-L", sock, ...args], (err, stdout) => (err ? reject(err) : resolve(stdout))));
    const screen = () => tmux("capture-pane", "-p", "-J", "-S", "-100", "-t", "t");
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 200; i++) {
        const s = await screen();
        if (re.test(s)) return s;
        await delay(100);
      }
      assert.fail(`screen never matched ${re}:\n${await screen()}`);
    };
    const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
    afterEach(async () => {
      await tmux("kill-server").catch(() => {});
    });

    it("pull redraws one line per layer in place and ends with the digest", async () => {
      const { ns } = freshNamespace();
      const ref = `${registry.host}/t19d/small:1`;
      const cmd = [process.execPath, bin, "--namespace", ns, "pull", ref].map(quote).join(" ");
      await tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "sh", "-c", `${cmd}; echo EXITED:$?; sleep 60`);
      const s = await waitFor(/EXITED:\d+/);
      assert.match(s, /EXITED:0/, s);
      const lines = s.split("\n").map((l) => l.trimEnd());
      const exited = lines.findIndex((l) => l.startsWith("EXITED:"));
      assert.equal(lines[exited - 1], digest, s);
      assert.equal(lines[exited - 2], `Pulled ${ref}`, s);
      for (const layer of layers) {
        assert.deepEqual(
          lines.filter((l) => l.startsWith(short(layer))),
          [`${short(layer)}: Pull complete`],
          `one line per layer, redrawn in place:\n${s}`,
        );
      }
      assert.ok(!lines.some((l) => /^(layer|manifest|config) /.test(l)), `no plain lines on a terminal:\n${s}`);
    });

    it("login asks for the password without echoing it", async () => {
      const config = await mkdtemp(join(work, "docker-config-"));
      const cmd = [process.execPath, bin, "login", "-u", "ci", authRegistry.host].map(quote).join(" ");
      await tmux(
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "100",
        "-y",
        "30",
        "sh",
        "-c",
        `DOCKER_CONFIG=${quote(config)} ${cmd}; echo EXITED:$?; sleep 60`,
      );
      await waitFor(/Password: $/m);
      await tmux("send-keys", "-t", "t", "-l", "s3cret");
      await tmux("send-keys", "-t", "t", "Enter");
      const s = await waitFor(/EXITED:\d+/);
      assert.match(s, /Login Succeeded\n(.*\n)?EXITED:0/, s);
      assert.doesNotMatch(s, /s3cret/, "the password was echoed");
      const saved = JSON.parse(await readFile(join(config, "config.json"), "utf8")) as { auths: Record<string, { auth: string }> };
      assert.equal(Buffer.from(saved.auths[authRegistry.host]!.auth, "base64").toString(), "ci:s3cret");
    });
  });

  it("--help of pull, login and logout, and the main usage, name the new commands and flags", async () => {
    const usage = await ctrexec(["--help"]);
    for (const c of ["pull", "login", "logout"]) assert.match(usage.stdout, new RegExp(`^  ${c} `, "m"));
    assert.match(usage.stdout, /--insecure-registry HOST/);
    assert.match((await ctrexec(["pull", "--help"])).stdout, /^Usage: ctrexec pull \[OPTIONS\] REF/);
    assert.match((await ctrexec(["login", "--help"])).stdout, /--password-stdin/);
    assert.match((await ctrexec(["logout", "--help"])).stdout, /^Usage: ctrexec logout \[REGISTRY\]/);
    assert.match((await ctrexec(["run", "--help"])).stdout, /--pull POLICY/);
  });
});
