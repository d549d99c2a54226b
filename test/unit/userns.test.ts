import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import {
  assertUserMapped,
  checkExplicitMaps,
  fromOciMappings,
  hostRoot,
  type IdMapEntry,
  type IdMapping,
  mapToHost,
  parseIdMapFlag,
  rangeMapping,
  toOciMappings,
  validateIdMapping,
} from "../../src/oci/userns.js";

const e = (containerId: number, hostId: number, size: number): IdMapEntry => ({ containerId, hostId, size });

/** The message of the InvalidArgumentError `fn` throws, after checking its field. */
function refusal(fn: () => unknown, field: string): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.equal(err.field, field);
    return err.message;
  }
  assert.fail("accepted");
}

describe("validateIdMapping", () => {
  const ok: IdMapping = { uidMap: [e(0, 200000, 65536)], gidMap: [e(0, 300000, 1000), e(1000, 400000, 64536)] };

  it("accepts valid maps and returns a copy", () => {
    const v = validateIdMapping(ok, "userns");
    assert.deepEqual(v, ok);
    assert.notEqual(v.uidMap, ok.uidMap);
    assert.notEqual(v.uidMap[0], ok.uidMap[0]);
    v.uidMap[0]!.hostId = 1;
    assert.equal(ok.uidMap[0]!.hostId, 200000);
    // The last valid id is 2^32-2: first + size may reach 2^32-1, not 2^32.
    validateIdMapping({ uidMap: [e(0, 4294967295 - 65536, 65536)], gidMap: [e(0, 1, 4294967294)] }, "userns");
    // Adjacent lines do not overlap.
    validateIdMapping({ uidMap: [e(0, 100, 10), e(10, 110, 10)], gidMap: [e(0, 100, 1)] }, "userns");
  });

  it("refuses what the kernel or runc would refuse, naming the field and the entry", () => {
    const bad = (m: unknown) => refusal(() => validateIdMapping(m as IdMapping, "userns"), "userns");
    assert.match(bad({ uidMap: [], gidMap: ok.gidMap }), /uidMap must be a non-empty list/);
    assert.match(bad({ uidMap: ok.uidMap }), /gidMap must be a non-empty list/);
    assert.match(bad(null), /must be \{ uidMap, gidMap \}/);
    const many = Array.from({ length: 341 }, (_, i) => e(i, 100000 + i, 1));
    assert.match(bad({ uidMap: many, gidMap: ok.gidMap }), /341 entries; the kernel takes at most 340/);
    validateIdMapping({ uidMap: many.slice(0, 340), gidMap: ok.gidMap }, "userns");
    assert.match(bad({ uidMap: [e(0, -1, 5)], gidMap: ok.gidMap }), /uidMap\[0\]\.hostId must be a whole number/);
    assert.match(bad({ uidMap: [e(0, 1.5, 5)], gidMap: ok.gidMap }), /hostId/);
    assert.match(bad({ uidMap: [{ containerId: 0, hostId: "1", size: 5 }], gidMap: ok.gidMap }), /hostId/);
    assert.match(bad({ uidMap: [e(0, 2 ** 53, 5)], gidMap: ok.gidMap }), /hostId/);
    assert.match(bad({ uidMap: [e(0, 1, 0)], gidMap: ok.gidMap }), /uidMap\[0\]\.size must be at least 1/);
    assert.match(bad({ uidMap: [e(0, 4294967295 - 65535, 65536)], gidMap: ok.gidMap }), /hostId 4294901760 \+ size 65536 passes 4294967295/);
    assert.match(bad({ uidMap: [e(4294967295 - 10, 1, 11)], gidMap: ok.gidMap }), /containerId .* passes/);
    assert.match(
      bad({ uidMap: [e(0, 100, 10), e(5, 200, 10)], gidMap: ok.gidMap }),
      /uidMap\[0\] and uidMap\[1\] overlap on the container side \(0-9 and 5-14\)/,
    );
    assert.match(
      bad({ uidMap: ok.uidMap, gidMap: [e(0, 100, 10), e(20, 109, 1)] }),
      /gidMap\[0\] and gidMap\[1\] overlap on the host side \(100-109 and 109\)/,
    );
    assert.match(bad({ uidMap: [e(1, 100, 10)], gidMap: ok.gidMap }), /uidMap must map container uid 0: the container's root user must exist/);
    assert.match(bad({ uidMap: ok.uidMap, gidMap: [e(1000, 100, 10)] }), /gidMap must map container gid 0/);
  });
});

describe("parseIdMapFlag", () => {
  it("parses podman's CONTAINER:HOST:SIZE", () => {
    assert.deepEqual(parseIdMapFlag("0:100000:65536", "uidmap"), e(0, 100000, 65536));
    assert.deepEqual(parseIdMapFlag(" 1000:1:1 ", "gidmap"), e(1000, 1, 1));
  });

  it("refuses anything else with the form in the message", () => {
    for (const s of ["", "0:1", "0:1:2:3", "a:1:2", "-1:1:2", "0:1:2.5", "0:0x10:2"]) {
      assert.match(
        refusal(() => parseIdMapFlag(s, "uidmap"), "uidmap"),
        /is not CONTAINER:HOST:SIZE, e\.g\. 0:100000:65536/,
        s,
      );
    }
    assert.match(
      refusal(() => parseIdMapFlag("0:1:2,2:3:4", "uidmap"), "uidmap"),
      /one CONTAINER:HOST:SIZE per flag: repeat the flag/,
    );
    assert.match(
      refusal(() => parseIdMapFlag("+0:1:2", "uidmap"), "uidmap"),
      /podman's \+, @, u and g forms are not supported/,
    );
    assert.match(
      refusal(() => parseIdMapFlag("0:1:0", "uidmap"), "uidmap"),
      /SIZE must be at least 1/,
    );
    assert.match(
      refusal(() => parseIdMapFlag("0:4294967290:10", "uidmap"), "uidmap"),
      /HOST\+SIZE must stay below 4294967295/,
    );
    assert.match(
      refusal(() => parseIdMapFlag("99999999999999999999:1:1", "uidmap"), "uidmap"),
      /CONTAINER\+SIZE/,
    );
  });
});

describe("mapping helpers", () => {
  const m: IdMapping = { uidMap: [e(0, 200000, 1000), e(1000, 500000, 10)], gidMap: [e(0, 300000, 65536)] };

  it("maps container ids to host ids, and says which are not mapped", () => {
    assert.equal(mapToHost(m.uidMap, 0), 200000);
    assert.equal(mapToHost(m.uidMap, 999), 200999);
    assert.equal(mapToHost(m.uidMap, 1000), 500000);
    assert.equal(mapToHost(m.uidMap, 1009), 500009);
    assert.equal(mapToHost(m.uidMap, 1010), undefined);
    assert.equal(mapToHost(m.uidMap, -1), undefined);
    assert.deepEqual(hostRoot(m), { uid: 200000, gid: 300000 });
    assert.throws(() => hostRoot({ uidMap: [e(1, 2, 3)], gidMap: m.gidMap }), InvalidArgumentError);
  });

  it("makes a range's mapping", () => {
    assert.deepEqual(rangeMapping(0x10000000, 0x20000000), { uidMap: [e(0, 0x10000000, 65536)], gidMap: [e(0, 0x20000000, 65536)] });
    assert.deepEqual(rangeMapping(5, 6, 7).gidMap, [e(0, 6, 7)]);
  });

  it("checks that a user and all its groups are mapped", () => {
    assertUserMapped(m, { uid: 1005, gid: 65535, additionalGids: [0, 10] });
    assert.equal(
      refusal(() => assertUserMapped(m, { uid: 70000, gid: 0, additionalGids: [] }), "user"),
      "user 70000 is not mapped by the run's user namespace (0-999, 1000-1009)",
    );
    assert.match(
      refusal(() => assertUserMapped(m, { uid: 0, gid: 65536, additionalGids: [] }), "user"),
      /group 65536 is not mapped .* \(0-65535\)/,
    );
    assert.match(
      refusal(() => assertUserMapped(m, { uid: 0, gid: 0, additionalGids: [5, 70000] }, "exec.user"), "exec.user"),
      /group 70000/,
    );
  });

  it("converts to and from the OCI spec's shape", () => {
    const oci = toOciMappings(m);
    assert.deepEqual(oci.uidMappings, [
      { containerID: 0, hostID: 200000, size: 1000 },
      { containerID: 1000, hostID: 500000, size: 10 },
    ]);
    assert.deepEqual(fromOciMappings(oci), m);
    assert.equal(fromOciMappings({}), undefined);
    assert.equal(fromOciMappings(undefined), undefined);
  });
});

describe("checkExplicitMaps", () => {
  it("refuses host ids below 65536, where the host's accounts are, on either map", () => {
    const ok = { uidMap: [e(0, 65536, 65536)], gidMap: [e(0, 0x10000000, 65536)] };
    assert.deepEqual(checkExplicitMaps(ok, "userns"), ok);
    assert.match(
      refusal(() => checkExplicitMaps({ uidMap: [e(0, 0, 65536)], gidMap: ok.gidMap }, "userns"), "userns"),
      /uidMap: host id 0 is below 65536/,
    );
    assert.match(
      refusal(() => checkExplicitMaps({ uidMap: ok.uidMap, gidMap: [e(0, 100000, 10), e(10, 65535, 1)] }, "userns"), "userns"),
      /gidMap: host id 65535/,
    );
  });
});
