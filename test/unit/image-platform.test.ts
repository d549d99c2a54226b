import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { childGcLabels } from "../../src/image/media-types.js";
import { choosePlatform, formatPlatform, normalizePlatform, parsePlatform, platformRank } from "../../src/image/platform.js";

describe("platforms, as containerd reads and matches them", () => {
  it("parses os/arch[/variant] and arch alone, normalizing names and implied variants", () => {
    assert.deepEqual(parsePlatform("linux/amd64"), { os: "linux", architecture: "amd64" });
    assert.deepEqual(parsePlatform("linux/x86_64"), { os: "linux", architecture: "amd64" });
    assert.deepEqual(parsePlatform("linux/arm64/v8"), { os: "linux", architecture: "arm64" });
    assert.deepEqual(parsePlatform("linux/aarch64"), { os: "linux", architecture: "arm64" });
    assert.deepEqual(parsePlatform("linux/arm"), { os: "linux", architecture: "arm", variant: "v7" });
    assert.deepEqual(parsePlatform("linux/arm/6"), { os: "linux", architecture: "arm", variant: "v6" });
    assert.deepEqual(parsePlatform("arm64"), { os: "linux", architecture: "arm64" });
    assert.deepEqual(parsePlatform("Linux/AMD64"), { os: "linux", architecture: "amd64" });
    assert.equal(formatPlatform(parsePlatform("linux/arm/v7")), "linux/arm/v7");
  });

  it("refuses what is not OS/ARCH[/VARIANT], naming the field", () => {
    for (const bad of ["", "linux/", "/amd64", "linux/amd64/v1/x", "linux/am d64", "linux/amd64\0"]) {
      assert.throws(
        () => parsePlatform(bad),
        (err: unknown) => err instanceof InvalidArgumentError && err.field === "platform",
        bad,
      );
    }
  });

  it("ranks as containerd's platform vector: exact first, then what the host also runs; no platform last", () => {
    const want = normalizePlatform({ os: "linux", architecture: "arm", variant: "v7" });
    assert.equal(platformRank(want, { os: "linux", architecture: "arm", variant: "v7" }), 0);
    assert.equal(platformRank(want, { os: "linux", architecture: "arm", variant: "v6" }), 1);
    assert.equal(platformRank(want, { os: "linux", architecture: "arm", variant: "v8" }), undefined);
    assert.equal(platformRank({ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "arm64" }), undefined);
    assert.equal(platformRank({ os: "linux", architecture: "amd64" }, { os: "windows", architecture: "amd64" }), undefined);
    assert.equal(platformRank({ os: "linux", architecture: "arm64" }, { os: "linux", architecture: "arm64", variant: "v8" }), 0);
    // amd64 runs 386; arm64 runs arm/v8…v5; amd64/v3 runs v2 and v1 (the unnamed baseline).
    assert.equal(platformRank({ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "386" }), 1);
    assert.equal(platformRank({ os: "linux", architecture: "arm64" }, { os: "linux", architecture: "arm", variant: "v7" }), 2);
    assert.equal(platformRank(parsePlatform("linux/amd64/v3"), { os: "linux", architecture: "amd64" }), 2);
    assert.equal(platformRank({ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "amd64", variant: "v2" }), undefined);
    // An entry without a platform matches anything, after every real match (containerd keeps it, sorted last).
    assert.equal(platformRank({ os: "linux", architecture: "amd64" }, undefined), 2);
  });

  it("chooses from an index like containerd: the best rank, the first listed on a tie; attestations never", () => {
    const entries = [
      { id: "att", platform: { os: "unknown", architecture: "unknown" } },
      { id: "v6", platform: { os: "linux", architecture: "arm", variant: "v6" } },
      { id: "v7", platform: { os: "linux", architecture: "arm", variant: "v7" } },
      { id: "v7b", platform: { os: "linux", architecture: "arm", variant: "v7" } },
      { id: "none" },
    ];
    assert.equal(choosePlatform(entries, parsePlatform("linux/arm/v7"))?.id, "v7");
    assert.equal(choosePlatform(entries, parsePlatform("linux/arm/v6"))?.id, "v6");
    assert.equal(choosePlatform(entries, parsePlatform("linux/amd64"))?.id, "none");
    assert.equal(choosePlatform(entries.slice(0, 4), parsePlatform("linux/amd64")), undefined);
    assert.equal(choosePlatform(entries.slice(0, 4), parsePlatform("linux/arm64"))?.id, "v7");
  });
});

describe("the gc.ref labels a parent gets for its children, numbered as containerd's ChildGCLabels", () => {
  it("config, then manifests m.<i>, layers l.<i>, anything else <i>, each kind counted on its own", () => {
    assert.deepEqual(
      childGcLabels([
        { mediaType: "application/vnd.oci.image.config.v1+json", digest: "sha256:c" },
        { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: "sha256:l0" },
        { mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", digest: "sha256:l1" },
        { mediaType: "application/vnd.oci.image.layer.v1.tar+zstd", digest: "sha256:l2" },
      ]),
      {
        "containerd.io/gc.ref.content.config": "sha256:c",
        "containerd.io/gc.ref.content.l.0": "sha256:l0",
        "containerd.io/gc.ref.content.l.1": "sha256:l1",
        "containerd.io/gc.ref.content.l.2": "sha256:l2",
      },
    );
    assert.deepEqual(
      childGcLabels([
        { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:m0" },
        { mediaType: "application/vnd.docker.distribution.manifest.v2+json", digest: "sha256:m1" },
        { mediaType: "application/vnd.oci.image.index.v1+json", digest: "sha256:i" },
        { mediaType: "application/vnd.in-toto+json", digest: "sha256:x" },
      ]),
      {
        "containerd.io/gc.ref.content.m.0": "sha256:m0",
        "containerd.io/gc.ref.content.m.1": "sha256:m1",
        "containerd.io/gc.ref.content.0": "sha256:i",
        "containerd.io/gc.ref.content.1": "sha256:x",
      },
    );
  });
});
