import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { buildHosts } from "../../src/oci/hosts.js";

describe("buildHosts (reference §6.2)", () => {
  it("names localhost and the hostname, then the IPv6 localhost line", () => {
    assert.equal(buildHosts("testtest"), "127.0.0.1\tlocalhost testtest\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    assert.match(buildHosts(""), /^127\.0\.0\.1\tlocalhost ctrexec\n/);
  });

  it("appends extra hosts in order, with canonical addresses, without dedup", () => {
    const out = buildHosts("h", [
      { host: "some.host", ip: "169.254.11.22" },
      { host: "v6", ip: "2001:DB8:0:0::1" },
      { host: "mapped", ip: "::ffff:10.1.2.3" },
      { host: "some.host", ip: "169.254.11.22" },
    ]);
    assert.equal(out.split("\n").slice(2).join("\n"), "169.254.11.22\tsome.host\n2001:db8::1\tv6\n10.1.2.3\tmapped\n169.254.11.22\tsome.host\n");
  });

  it("rejects a bad IP or a host name that could inject lines", () => {
    assert.throws(
      () => buildHosts("h", [{ host: "x", ip: "1.2.3" }]),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "extraHosts" && /failed to parse IP 1\.2\.3/.test(e.message),
    );
    assert.throws(() => buildHosts("h", [{ host: "a\n6.6.6.6 evil", ip: "1.2.3.4" }]), /invalid extraHosts/);
    assert.throws(() => buildHosts("bad host"), /invalid hostname/);
  });
});
