import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { fstatSync, mkdirSync, mkdtempSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  FileTooLargeError,
  isErrno,
  mkdirAt,
  O,
  openAt,
  openat2EagainCountForTests,
  openInRoot,
  openRoot,
  readRegularFile,
  unlinkAt,
  useInRootImplementationForTests,
  withFd,
} from "../../src/fs/in-root.js";

/** The inode an fd refers to, to compare with what a path names. */
const ino = (fd: number) => fstatSync(fd).ino;

// Every way it is done: openat2 (this kernel), the addon's fd walk for kernels without it, and plain Node
// without the addon.
for (const impl of ["openat2", "walk", "node"] as const) {
  describe(`in-root primitives (${impl})`, () => {
    let base: string;
    let root: string;
    let outside: string;
    before(() => {
      useInRootImplementationForTests(impl);
      base = realpathSync(mkdtempSync(join(tmpdir(), "ctrexec-inroot-")));
      root = join(base, "root");
      outside = join(base, "outside");
      mkdirSync(join(root, "etc"), { recursive: true });
      mkdirSync(join(root, "data/sub"), { recursive: true });
      writeFileSync(join(root, "etc/marker"), "inside");
      mkdirSync(outside);
      writeFileSync(join(outside, "marker"), "outside");
      symlinkSync(outside, join(root, "abs")); // absolute: the host's dir if followed naively
      symlinkSync("../../../../../../outside", join(root, "climb")); // climbs with ..
      symlinkSync("/etc", join(root, "data/etc-link"));
      symlinkSync("loop", join(root, "loop"));
    });
    after(() => {
      useInRootImplementationForTests("openat2");
      rmSync(base, { recursive: true, force: true });
    });

    it("resolves absolute and climbing symlinks inside the root, never to the host", () => {
      withFd(openRoot(root), (r) => {
        assert.throws(() => openInRoot(r, "abs/marker", O.PATH), { code: "ENOENT" });
        assert.throws(() => openInRoot(r, "climb/marker", O.PATH), { code: "ENOENT" });
        withFd(openInRoot(r, "/data/etc-link/marker", O.PATH), (fd) => assert.equal(ino(fd), statSync(join(root, "etc/marker")).ino));
        withFd(openInRoot(r, "../../..", O.PATH | O.DIRECTORY), (fd) => assert.equal(ino(fd), statSync(root).ino));
        withFd(openInRoot(r, "", O.PATH), (fd) => assert.equal(ino(fd), statSync(root).ino));
      });
    });

    it("refuses symlinks on the way with noSymlinks, and symlink loops", () => {
      withFd(openRoot(root), (r) => {
        assert.throws(() => openInRoot(r, "data/etc-link/marker", O.PATH, { noSymlinks: true }), { code: "ELOOP" });
        withFd(openInRoot(r, "data/sub", O.PATH, { noSymlinks: true }), (fd) => assert.equal(ino(fd), statSync(join(root, "data/sub")).ino));
        assert.throws(() => openInRoot(r, "loop", O.PATH), { code: "ELOOP" });
      });
    });

    it("opens a directory for real only with O_DIRECTORY semantics, and a final symlink not at all with O_NOFOLLOW", () => {
      withFd(openRoot(root), (r) => {
        withFd(openInRoot(r, "data", O.RDONLY | O.DIRECTORY), (fd) => assert.ok(fstatSync(fd).isDirectory()));
        assert.throws(() => openInRoot(r, "etc/marker", O.RDONLY | O.DIRECTORY), { code: "ENOTDIR" });
        // O_PATH|O_NOFOLLOW gives the link itself; it is not followed.
        withFd(openInRoot(r, "abs", O.PATH | O.NOFOLLOW), (fd) => assert.ok(fstatSync(fd).isSymbolicLink()));
      });
    });

    it("mkdirat/openat/unlinkat act on the name in the directory fd, never through a symlink", () => {
      withFd(openRoot(root), (r) =>
        withFd(openInRoot(r, "data", O.PATH | O.DIRECTORY), (d) => {
          mkdirAt(d, "made", 0o700);
          assert.ok(statSync(join(root, "data/made")).isDirectory());
          assert.throws(
            () => mkdirAt(d, "made", 0o700),
            (e: unknown) => isErrno(e, "EEXIST"),
          );
          assert.throws(
            () => openAt(d, "etc-link", O.RDONLY | O.DIRECTORY | O.NOFOLLOW),
            (e: unknown) => isErrno(e, "ELOOP", "ENOTDIR"),
          );
          unlinkAt(d, "made", true);
          assert.throws(() => statSync(join(root, "data/made")), { code: "ENOENT" });
          // unlinkat of a symlink removes the link, not its target
          symlinkSync(join(outside), join(root, "data/tmp-link"));
          unlinkAt(d, "tmp-link", false);
          assert.ok(statSync(join(outside, "marker")).isFile());
        }),
      );
    });

    it("takes one name only in openAt/mkdirAt/unlinkAt (EINVAL for `/`, `.`, `..`), and never follows a symlink in openAt", () => {
      withFd(openRoot(root), (r) =>
        withFd(openInRoot(r, "data", O.PATH | O.DIRECTORY), (d) => {
          for (const name of ["sub/x", "..", ".", "", "../outside"]) {
            assert.throws(() => openAt(d, name, O.PATH), { code: "EINVAL" }, `openAt ${name}`);
            assert.throws(() => mkdirAt(d, name, 0o700), { code: "EINVAL" }, `mkdirAt ${name}`);
            assert.throws(() => unlinkAt(d, name, true), { code: "EINVAL" }, `unlinkAt ${name}`);
          }
          // A NUL byte would make C see a shorter name: refused.
          assert.throws(() => openAt(d, "sub\0x", O.PATH));
          assert.throws(() => mkdirAt(d, "made\0x", 0o700));
          assert.throws(() => openInRoot(r, "data\0/x", O.PATH));
          // Without O_NOFOLLOW from the caller: the link itself, never /etc.
          withFd(openAt(d, "etc-link", O.PATH), (fd) => assert.ok(fstatSync(fd).isSymbolicLink()));
          assert.throws(
            () => openAt(d, "etc-link", O.RDONLY | O.DIRECTORY),
            (e: unknown) => isErrno(e, "ELOOP", "ENOTDIR"),
          );
        }),
      );
    });

    it("treats a trailing slash as the kernel does: the object must be a directory, a symlink there is followed", () => {
      symlinkSync("../etc/marker", join(root, "data/file-link"));
      try {
        withFd(openRoot(root), (r) => {
          assert.throws(() => openInRoot(r, "etc/marker/", O.PATH), { code: "ENOTDIR" });
          assert.throws(() => openInRoot(r, "etc/marker//", O.PATH | O.NOFOLLOW), { code: "ENOTDIR" });
          assert.throws(() => openInRoot(r, "data/file-link/", O.PATH), { code: "ENOTDIR" });
          withFd(openInRoot(r, "data/", O.PATH), (fd) => assert.equal(ino(fd), statSync(join(root, "data")).ino));
          // A final link with a slash after it is followed even with O_NOFOLLOW (inside the root).
          withFd(openInRoot(r, "data/etc-link/", O.PATH | O.NOFOLLOW), (fd) => assert.equal(ino(fd), statSync(join(root, "etc")).ino));
          // Without the slash, a final link to a file is the file (no slash made up after the link's target).
          withFd(openInRoot(r, "data/file-link", O.PATH), (fd) => assert.equal(ino(fd), statSync(join(root, "etc/marker")).ino));
        });
      } finally {
        rmSync(join(root, "data/file-link"));
      }
    });
  });
}

describe("openInRoot where a seccomp filter refuses openat2 (a container's profile)", () => {
  let base: string;
  before(() => {
    base = realpathSync(mkdtempSync(join(tmpdir(), "ctrexec-inroot-seccomp-")));
    execFileSync("cc", [
      "-O2",
      "-Wall",
      "-o",
      join(base, "no-openat2"),
      fileURLToPath(new URL("../../../test/helpers/no-openat2.c", import.meta.url)),
    ]);
    mkdirSync(join(base, "root/etc"), { recursive: true });
    writeFileSync(join(base, "root/etc/marker"), "inside");
    symlinkSync("/etc", join(base, "root/abs"));
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  // openat2 fails with EPERM there on every call: the addon sees it once at load time and walks instead.
  it("resolves with the walk, inside the root, instead of failing with EPERM", () => {
    const module = fileURLToPath(new URL("../../src/fs/in-root.js", import.meta.url));
    const script = `
      import { fstatSync } from "node:fs";
      import { O, openInRoot, openRoot, withFd } from ${JSON.stringify(module)};
      const ino = withFd(openRoot(process.argv[1]), (r) => withFd(openInRoot(r, "abs/marker", O.PATH), (fd) => fstatSync(fd).ino));
      process.stdout.write(String(ino));`;
    const out = execFileSync(join(base, "no-openat2"), [process.execPath, "--input-type=module", "-e", script, join(base, "root")], {
      encoding: "utf8",
    });
    assert.equal(Number(out), statSync(join(base, "root/etc/marker")).ino);
  });
});

describe("openInRoot while something on the host renames in a loop", () => {
  let base: string;
  let racer: string;
  before(() => {
    useInRootImplementationForTests("openat2");
    base = realpathSync(mkdtempSync(join(tmpdir(), "ctrexec-inroot-rename-")));
    racer = join(base, "racer");
    execFileSync("cc", ["-O2", "-Wall", "-o", racer, fileURLToPath(new URL("../../../test/helpers/racer.c", import.meta.url))]);
    mkdirSync(join(base, "root/a/b/c"), { recursive: true });
    writeFileSync(join(base, "root/a/marker"), "x");
    mkdirSync(join(base, "x"));
    mkdirSync(join(base, "y"));
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  // openat2 fails with EAGAIN for `..` whenever a rename happened anywhere on the host during the lookup (the
  // kernel's rename seqlock): a container renaming in a loop made most lookups with many `..` fail. The lookups
  // go on until openat2 has met EAGAIN a number of times (the addon counts them), so the test never passes
  // because the race was missed: where a met EAGAIN is not retried, it is thrown.
  it("never fails: openat2's EAGAIN is retried, then the lookup walks", async () => {
    const stop = join(base, "stop");
    const child = spawn(racer, ["pair", join(base, "x"), join(base, "y"), stop, "10000000000"], { stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise<void>((r) => child.on("close", () => r()));
    await new Promise<void>((r) => child.stdout.on("data", (d: Buffer) => d.toString().includes("racing") && r()));
    const before = openat2EagainCountForTests();
    const met = () => openat2EagainCountForTests() - before;
    let lookups = 0;
    try {
      const path = `a/b/c/${"../../b/c/".repeat(300)}../../marker`;
      withFd(openRoot(join(base, "root")), (r) => {
        const want = statSync(join(base, "root/a/marker")).ino;
        for (; lookups < 2000 || (met() < 50 && lookups < 1_000_000); lookups++) {
          withFd(openInRoot(r, path, O.PATH), (fd) => assert.equal(ino(fd), want));
        }
      });
    } finally {
      writeFileSync(stop, "");
      await exited;
    }
    assert.ok(met() >= 50, `openat2 met EAGAIN ${met()} times in ${lookups} lookups: the race was not run`);
  });
});

describe("readRegularFile", () => {
  let base: string;
  before(() => {
    base = realpathSync(mkdtempSync(join(tmpdir(), "ctrexec-inroot-read-")));
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  it("reads a regular file through its O_PATH fd, bounded", () => {
    writeFileSync(join(base, "f"), "hello");
    withFd(openRoot(base), (r) =>
      withFd(openInRoot(r, "f", O.PATH), (fd) => {
        const st = fstatSync(fd);
        assert.equal(readRegularFile(fd, st, 100).toString(), "hello");
        assert.throws(() => readRegularFile(fd, st, 4), FileTooLargeError);
      }),
    );
  });

  it("refuses anything else before opening it (a FIFO would be opened by a reopen)", () => {
    execFileSync("mkfifo", [join(base, "fifo")]);
    withFd(openRoot(base), (r) =>
      withFd(openInRoot(r, "fifo", O.PATH), (fd) => {
        const st = fstatSync(fd);
        assert.ok(st.isFIFO());
        assert.throws(() => readRegularFile(fd, st, 100), /not a regular file/);
      }),
    );
  });
});
