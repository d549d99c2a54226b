// The layers of src/, checked by `npm run lint` (`depcruise src`): each rule below fails the build when an import
// breaks it. docs/architecture.md describes the layers; this file is what holds them.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "fs-oci-pure",
      comment:
        "src/fs/ and src/oci/ are plain building blocks (paths, mounts, OCI spec): they know nothing of containerd, " +
        "the executor, images, networks, the CLI or the default rootfs.",
      severity: "error",
      from: { path: "^src/(fs|oci)/" },
      to: { path: "^src/(containerd|executor|image|network|cli|rootfs|gen|registry)/" },
    },
    {
      name: "containerd-knows-no-executor",
      comment:
        "src/containerd/ is the containerd client and its IO: it knows nothing of the executor built on it, nor of " +
        "images, networks, the CLI or the default rootfs.",
      severity: "error",
      from: { path: "^src/containerd/" },
      to: { path: "^src/(executor|image|network|cli|rootfs|registry)/" },
    },
    {
      name: "image-uses-no-executor-internals",
      comment:
        "src/image/ implements the executor's public Mountable interface and nothing else of it: of src/executor/ it " +
        "may import only the public types file.",
      severity: "error",
      from: { path: "^src/image/" },
      to: { path: "^src/executor/", pathNot: "^src/executor/types\\.ts$" },
    },
    {
      name: "registry-is-plain-http",
      comment:
        "src/registry/ is a registry client over HTTP: it knows nothing of containerd, the executor, images, " +
        "networks, the CLI or the OCI runtime spec; src/image/pull.ts joins it to containerd.",
      severity: "error",
      from: { path: "^src/registry/" },
      to: { path: "^src/", pathNot: "^src/(registry/|util/|errors\\.ts$)" },
    },
    {
      name: "cli-uses-public-entry-points",
      comment:
        "The CLI is a client of the library like any other: besides its own modules it imports only the package's " +
        "public entry points (ctrexec, ctrexec/containerd, ctrexec/oci).",
      severity: "error",
      from: { path: "^src/cli/" },
      to: {
        path: "^src/",
        pathNot: ["^src/cli/", "^src/index\\.ts$", "^src/containerd/index\\.ts$", "^src/oci/index\\.ts$"],
      },
    },
    {
      name: "rootless-knows-no-executor",
      comment:
        "src/rootless/ finds, starts and stops a user's rootless containerd: it may speak to containerd, and knows " +
        "nothing of the executor, images, networks or the CLI.",
      severity: "error",
      from: { path: "^src/rootless/" },
      to: { path: "^src/(executor|image|network|cli|rootfs|registry|gen)/" },
    },
    {
      name: "util-and-errors-are-leaves",
      comment: "src/util/ and src/errors.ts are used by every layer, so they import from none of them.",
      severity: "error",
      from: { path: "^src/(util/|errors\\.ts$)" },
      to: { path: "^src/", pathNot: "^src/(util/|errors\\.ts$)" },
    },
    {
      name: "gen-only-from-containerd",
      comment:
        "The generated protocol types (src/gen/) are containerd's wire format: only src/containerd/ speaks it, and " +
        "maps it to the types the rest of the code uses.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/(containerd|gen)/" },
      to: { path: "^src/gen/" },
    },
    {
      name: "src-not-to-test-or-bench",
      comment: "The library never depends on its tests or benchmarks.",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(test|bench)/" },
    },
    {
      name: "no-circular",
      comment: "A cycle makes module initialisation order matter and the layers unreadable.",
      severity: "error",
      from: { path: "^src/" },
      to: { circular: true },
    },
    {
      name: "no-runtime-dev-or-peer-deps",
      comment:
        "What src/ imports at run time must be a dependency: devDependencies are not installed for users, and an " +
        "optional peer dependency (@opentelemetry/api) may be missing, so only its types may be imported.",
      severity: "error",
      from: { path: "^src/" },
      to: { dependencyTypes: ["npm-dev", "npm-peer", "npm-optional"], dependencyTypesNot: ["type-only"] },
    },
    {
      name: "not-to-unresolvable",
      comment:
        "An import that does not resolve would fail at run time, and the rules above would miss it. The native " +
        "addon is the exception: util/native.ts loads it from build/ relative to dist/, optionally, at run time.",
      severity: "error",
      from: {},
      to: { couldNotResolve: true, pathNot: "^\\.\\./\\.\\./\\.\\./build/Release/[a-z_]+\\.node$" },
    },
  ],
  options: {
    doNotFollow: { path: ["node_modules"] },
    // Type-only imports are dependencies between layers too.
    tsPreCompilationDeps: true,
    // tsconfig.json's NodeNext resolution: `./x.js` in an import is the source ./x.ts.
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
    },
    moduleSystems: ["es6", "cjs"],
  },
};
