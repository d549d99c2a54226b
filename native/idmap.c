// User namespaces and idmapped mounts, for runs in a user namespace (#20): util-linux 2.38 and runc 1.1.5
// silently ignore their idmap options, so ctrexec makes these mounts itself. Also the per-thread fs ids an
// overlay on idmapped layers must be mounted with (an overlay keeps its mounter's credentials, and on an
// idmapped upper the mounter's fsuid must be mapped), mount flags (statvfs) and flock(2).
// Anything that can block (clone + waitpid, mounts) runs on the libuv threadpool; the rest is a syscall of
// microseconds and synchronous.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <node_api.h>
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#include "errno-error.h"
#include "string-arg.h"

// The mount API of Linux 5.2 (open_tree, move_mount) and 5.12 (mount_setattr), for headers older than that.
// The numbers are the same on every architecture (the unified syscall table since 5.1).
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#define MOUNT_ATTR_NOEXEC 0x00000008
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif
/** The flags a caller may add to an idmapped mount. */
#define ALLOWED_ATTRS (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)

/** struct mount_attr (linux/mount.h), under our own name: glibc 2.36's sys/mount.h declares it too, older ones not. */
struct ctrexec_mount_attr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

/** What failed: errno, the syscall and the path it was given (for the Node-style error). */
typedef struct {
  int err;
  const char *syscall;
  char path[PATH_MAX];
} failure;

/** Records a failure; returns -1 for `return fail(...)`. */
static int fail(failure *f, int err, const char *syscall, const char *path) {
  f->err = err;
  f->syscall = syscall;
  snprintf(f->path, sizeof f->path, "%s", path ? path : "");
  return -1;
}

static napi_value failure_error(napi_env env, const failure *f) {
  return errno_error(env, f->err, f->syscall, f->path[0] ? f->path : NULL, "%s '%s'", f->syscall, f->path);
}

// ---- user namespaces -------------------------------------------------------------------------------------

/*
 * The child that holds the new user namespace until its maps are written and its ns file opened: it only waits
 * for SIGKILL. It is cloned with CLONE_VM, so no copy of this process's address space is made (a fork of Node
 * copies its page tables and leaves every page copy-on-write for the parent to fault on afterwards). That is
 * safe because the child touches nothing but its own stack: it starts with every signal blocked (the parent
 * thread blocks them around clone, and the mask is inherited), so no signal handler ever runs in it; glibc's
 * clone trampoline calls us without touching thread-local state; and the raw ppoll(2) syscall with no fds and no
 * timeout (not glibc's pause(), a cancellation point that writes the pthread struct it shares with the parent
 * thread; and aarch64 has no pause syscall) never returns with every catchable signal blocked, so it never
 * writes errno either. SIGKILL ends it, and the parent reaps it
 * before the stack is unmapped. Waiting for a signal rather than reading a pipe's EOF: a child made by another
 * thread at the same moment would hold a copy of our pipe's write end (and we of its), and neither would see EOF.
 */
static int userns_child(void *arg) {
  // If this process dies before it reaps us (SIGKILL, OOM), we must not live on as init's child holding a copy
  // of its address space and of every fd it had (a flock'd lock file among them): die with the thread that
  // made us, and if that already happened (we were reparented before the prctl), go at once. These raw calls
  // cannot fail with these arguments on a kernel with idmapped mounts (close_range is 5.9, idmaps 5.12), so
  // none writes errno (the parent thread's, shared through CLONE_VM).
  syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if ((pid_t)syscall(SYS_getppid) != (pid_t)(intptr_t)arg) syscall(SYS_exit, 0);
  syscall(SYS_close_range, 0U, ~0U, 0U);
  for (;;) syscall(SYS_ppoll, NULL, 0, NULL, NULL, 0);
  return 0;
}

static int write_file(const char *path, const char *text, failure *f) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail(f, errno, "open", path);
  size_t len = strlen(text);
  ssize_t n = write(fd, text, len);
  int err = n < 0 ? errno : (size_t)n != len ? EIO : 0;
  close(fd);
  return err ? fail(f, err, "write", path) : 0;
}

#define CHILD_STACK (64 * 1024)

/**
 * A new user namespace whose uid_map and gid_map are the given texts ("c h s\n" lines, each written at once, as
 * the kernel wants): its fd (O_CLOEXEC), or -1 with *f set. The child that made it is reaped on every path.
 */
static int open_userns(const char *uid_map, const char *gid_map, failure *f) {
  char *stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return fail(f, errno, "mmap", NULL);
  // The raw syscall: glibc's sigprocmask never blocks its own two signals (thread cancellation, setxid), whose
  // handlers would run in the child on this thread's memory.
  uint64_t all = ~(uint64_t)0, old;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, sizeof all);
  pid_t pid = clone(userns_child, stack + CHILD_STACK, CLONE_VM | CLONE_NEWUSER | SIGCHLD, (void *)(intptr_t)getpid());
  int clone_err = errno;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, sizeof old);
  if (pid < 0) {
    munmap(stack, CHILD_STACK);
    return fail(f, clone_err, "clone", NULL);
  }
  char path[64];
  int fd = -1;
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
  if (write_file(path, uid_map, f) == 0) {
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    if (write_file(path, gid_map, f) == 0) {
      snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
      fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail(f, errno, "open", path);
    }
  }
  // Not yet reaped, so `pid` is still ours: the kill cannot reach another process.
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
  munmap(stack, CHILD_STACK);
  return fd;
}

// ---- idmapped mounts -------------------------------------------------------------------------------------

/** The detached mount of `source`, idmapped to `userns_fd` with `attrs` added: its fd, or -1 with *f set. */
static int idmapped_tree(int userns_fd, const char *source, unsigned attrs, int recursive, failure *f) {
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0));
  if (tree < 0) return fail(f, errno, "open_tree", source);
  struct ctrexec_mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP | attrs, .userns_fd = (uint64_t)userns_fd};
  if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr, sizeof attr) < 0) {
    fail(f, errno, "mount_setattr", source);
    close(tree);
    return -1;
  }
  return tree;
}

static int idmap_mount(int userns_fd, const char *source, const char *target, unsigned attrs, int recursive, failure *f) {
  int tree = idmapped_tree(userns_fd, source, attrs, recursive, f);
  if (tree < 0) return -1;
  int rc = (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
  if (rc < 0) fail(f, errno, "move_mount", target);
  close(tree);
  return rc < 0 ? -1 : 0;
}

/** The host id idmapped mounts are probed with: any id will do, since the probe's mount is never attached. */
#define PROBE_HOST_ID 2147483646u

/** 0 when `path` can be idmapped (the mount made for the check is detached and dropped), else the errno. */
static int probe_idmap(const char *path) {
  failure f = {0};
  char map[64];
  snprintf(map, sizeof map, "0 %u 1\n", PROBE_HOST_ID);
  int ns = open_userns(map, map, &f);
  if (ns < 0) return f.err;
  int tree = idmapped_tree(ns, path, 0, 0, &f);
  close(ns);
  if (tree < 0) return f.err;
  close(tree);
  return 0;
}

// ---- per-thread fs ids -----------------------------------------------------------------------------------

/** A thread's fs ids and capabilities as found, to be put back. */
typedef struct {
  uid_t fsuid;
  gid_t fsgid;
  struct __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3];
} thread_ids;

static int capget3(struct __user_cap_data_struct *d) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  return (int)syscall(SYS_capget, &h, d);
}

static int capset3(const struct __user_cap_data_struct *d) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  return (int)syscall(SYS_capset, &h, d);
}

/** The current fsuid/fsgid: setfs[ug]id of an invalid id changes nothing and returns the current one. */
static uid_t current_fsuid(void) { return (uid_t)setfsuid((uid_t)-1); }
static gid_t current_fsgid(void) { return (gid_t)setfsgid((gid_t)-1); }

/*
 * Puts the calling thread's fs ids and capabilities back as `saved` had them, and checks they are. Every thread
 * this runs on is reused for unrelated work (a libuv worker, or Node's main thread), which must never go on with
 * other ids: a failure here aborts the process, loudly, rather than leave one that may.
 */
static void restore_ids(const thread_ids *saved) {
  // Back to fsuid 0 first: that alone raises the fs capabilities again (from the permitted set); then the exact
  // effective set found.
  setfsuid(saved->fsuid);
  setfsgid(saved->fsgid);
  int capset_rc = capset3(saved->caps);
  int capset_err = errno;
  struct __user_cap_data_struct now[_LINUX_CAPABILITY_U32S_3];
  int ok = capset_rc == 0 && current_fsuid() == saved->fsuid && current_fsgid() == saved->fsgid && capget3(now) == 0 &&
           memcmp(now, saved->caps, sizeof now) == 0;
  if (!ok) {
    fprintf(stderr, "ctrexec: FATAL: could not restore a thread's fsuid %u, fsgid %u and capabilities (%s); aborting\n",
            (unsigned)saved->fsuid, (unsigned)saved->fsgid, capset_rc == 0 ? "they differ after the restore" : strerror(capset_err));
    abort();
  }
}

/*
 * Gives the calling thread fsuid `uid` and fsgid `gid` (setfsuid/setfsgid are per thread, not broadcast to the
 * process as setuid is), then raises its effective capabilities to its permitted set: changing the fsuid from 0
 * clears CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER... from the effective set, and what runs with these ids acts
 * as the namespace's root, which has them. Saves what it found in *saved; on failure puts it back and returns -1.
 */
static int become_ids(uid_t uid, gid_t gid, thread_ids *saved, failure *f) {
  if (capget3(saved->caps) < 0) return fail(f, errno, "capget", NULL);
  saved->fsgid = (gid_t)setfsgid(gid);
  saved->fsuid = (uid_t)setfsuid(uid);
  // setfs[ug]id report no error: a refused change shows only in the ids.
  if (current_fsgid() != gid || current_fsuid() != uid) {
    const char *refused = current_fsgid() != gid ? "setfsgid" : "setfsuid";
    restore_ids(saved);
    return fail(f, EPERM, refused, NULL);
  }
  struct __user_cap_data_struct raised[_LINUX_CAPABILITY_U32S_3];
  memcpy(raised, saved->caps, sizeof raised);
  for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) raised[i].effective = raised[i].permitted;
  if (capset3(raised) < 0) {
    int err = errno;
    restore_ids(saved);
    return fail(f, err, "capset", NULL);
  }
  return 0;
}

// ---- threadpool requests ---------------------------------------------------------------------------------

typedef enum { OPEN_USERNS, IDMAP_MOUNT, MOUNT_AS_IDS, PROBE_IDMAP } request_kind;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  request_kind kind;
  char *s[4];  // OPEN_USERNS: uid map, gid map; IDMAP_MOUNT: source, target; MOUNT_AS_IDS: source, target, fstype,
               // data; PROBE_IDMAP: path
  int32_t fd;  // IDMAP_MOUNT: the user namespace
  uint32_t attrs, uid, gid;
  int recursive;
  unsigned long flags;
  int result;  // OPEN_USERNS: the fd; PROBE_IDMAP: 0 or the errno; else 0 or -1 with `f`
  failure f;
} request;

static void free_request(request *r) {
  for (int i = 0; i < 4; i++) free(r->s[i]);
  free(r);
}

static void execute(napi_env env, void *data) {
  (void)env;
  request *r = data;
  switch (r->kind) {
    case OPEN_USERNS:
      r->result = open_userns(r->s[0], r->s[1], &r->f);
      break;
    case IDMAP_MOUNT:
      r->result = idmap_mount(r->fd, r->s[0], r->s[1], r->attrs, r->recursive, &r->f);
      break;
    case PROBE_IDMAP:
      r->result = probe_idmap(r->s[0]);
      break;
    case MOUNT_AS_IDS: {
      thread_ids saved;
      r->result = become_ids(r->uid, r->gid, &saved, &r->f);
      if (r->result < 0) break;
      const char *fsdata = r->s[3] && r->s[3][0] ? r->s[3] : NULL;
      if (mount(r->s[0], r->s[1], r->s[2], r->flags, fsdata) < 0) r->result = fail(&r->f, errno, "mount", r->s[1]);
      restore_ids(&saved);
      break;
    }
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  request *r = data;
  if (status != napi_ok) {
    // Only a cancelled request gets here, and it never ran; an fd it somehow made is not leaked all the same.
    if (r->kind == OPEN_USERNS && r->result >= 0) close(r->result);
    failure f = {.err = EIO, .syscall = "async work"};
    napi_reject_deferred(env, r->deferred, failure_error(env, &f));
  } else if (r->kind == PROBE_IDMAP || (r->kind == OPEN_USERNS && r->result >= 0)) {
    napi_value v;
    napi_create_int32(env, r->result, &v);
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    settle_void(env, r->deferred, r->result < 0 ? failure_error(env, &r->f) : NULL);
  }
  napi_delete_async_work(env, r->work);
  free_request(r);
}

static napi_value queue(napi_env env, request *r, const char *name) {
  napi_value promise, resource_name;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  napi_create_async_work(env, NULL, resource_name, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}

// ---- argument checks -------------------------------------------------------------------------------------


/** A string or null/undefined: *out is NULL for the latter. Returns 0 for anything else. */
static int optional_string_arg(napi_env env, napi_value v, char **out) {
  napi_valuetype t;
  *out = NULL;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_null || t == napi_undefined) return 1;
  *out = string_arg(env, v);
  return *out != NULL;
}

/** An integer in [0, max]. */
static int uint_arg(napi_env env, napi_value v, double max, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d < 0 || d > max || d != (double)(uint64_t)d) return 0;
  *out = (uint32_t)d;
  return 1;
}

/** The largest valid uid or gid: (uid_t)-1 means "none" to the kernel. */
#define MAX_ID 4294967294.0

/**
 * A flat [containerId, hostId, size, ...] array as a uid_map/gid_map text, or NULL (TypeError thrown). The
 * kernel checks what it must (overlaps, the 340-line limit, one page): its refusal is the write's EINVAL.
 */
static char *map_arg(napi_env env, napi_value v, const char *what) {
  bool is_array = false;
  uint32_t n = 0;
  if (napi_is_array(env, v, &is_array) != napi_ok || !is_array || napi_get_array_length(env, v, &n) != napi_ok || n == 0 ||
      n % 3 != 0 || n > 340 * 3) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be 1 to 340 [containerId, hostId, size] triples, flat", what);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  char *text = malloc((size_t)n / 3 * 40 + 1);
  if (!text) return NULL;
  size_t at = 0;
  for (uint32_t i = 0; i < n; i += 3) {
    uint32_t t[3];
    for (uint32_t j = 0; j < 3; j++) {
      napi_value e;
      if (napi_get_element(env, v, i + j, &e) != napi_ok || !uint_arg(env, e, MAX_ID, &t[j]) || (j == 2 && t[j] == 0)) {
        free(text);
        char msg[128];
        snprintf(msg, sizeof msg, "%s[%u] must be an integer from %d to 4294967294", what, i + j, j == 2 ? 1 : 0);
        napi_throw_type_error(env, NULL, msg);
        return NULL;
      }
    }
    at += (size_t)sprintf(text + at, "%u %u %u\n", t[0], t[1], t[2]);
  }
  return text;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

// ---- N-API functions -------------------------------------------------------------------------------------

// openUserns(uidMap: number[], gidMap: number[]): Promise<number>
static napi_value OpenUserns(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_type(env, "openUserns(uidMap, gidMap) takes two arguments");
  char *uid_map = map_arg(env, argv[0], "uidMap");
  if (!uid_map) return NULL;
  char *gid_map = map_arg(env, argv[1], "gidMap");
  request *r = gid_map ? calloc(1, sizeof *r) : NULL;
  if (!r) {
    free(uid_map);
    free(gid_map);
    return NULL;
  }
  r->kind = OPEN_USERNS;
  r->s[0] = uid_map;
  r->s[1] = gid_map;
  r->result = -1;
  return queue(env, r, "ctrexec_open_userns");
}

// idmapMount(usernsFd: number, source: string, target: string, attrs: number, recursive: boolean): Promise<void>
static napi_value IdmapMount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  bool recursive = false;
  if (argc < 5 || napi_get_value_int32(env, argv[0], &r->fd) != napi_ok || r->fd < 0 || !(r->s[0] = string_arg(env, argv[1])) ||
      !(r->s[1] = string_arg(env, argv[2])) || !uint_arg(env, argv[3], 0xffffffffu, &r->attrs) || (r->attrs & ~ALLOWED_ATTRS) ||
      napi_get_value_bool(env, argv[4], &recursive) != napi_ok) {
    free_request(r);
    return throw_type(env,
                      "idmapMount(usernsFd, source, target, attrs, recursive): an fd, two paths, MOUNT_ATTR_RDONLY|NOSUID|NODEV|NOEXEC "
                      "bits and a boolean");
  }
  r->kind = IDMAP_MOUNT;
  r->recursive = recursive;
  return queue(env, r, "ctrexec_idmap_mount");
}

// mountAsIds(uid, gid, source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>
static napi_value MountAsIds(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  uint32_t flags = 0;
  if (argc < 7 || !uint_arg(env, argv[0], MAX_ID, &r->uid) || !uint_arg(env, argv[1], MAX_ID, &r->gid) ||
      !optional_string_arg(env, argv[2], &r->s[0]) || !(r->s[1] = string_arg(env, argv[3])) || !optional_string_arg(env, argv[4], &r->s[2]) ||
      !uint_arg(env, argv[5], 0xffffffffu, &flags) || !optional_string_arg(env, argv[6], &r->s[3])) {
    free_request(r);
    return throw_type(env, "mountAsIds(uid, gid, source, target, fstype, flags, data): two ids, then mount(2)'s arguments");
  }
  r->kind = MOUNT_AS_IDS;
  r->flags = flags;
  return queue(env, r, "ctrexec_mount_as_ids");
}

// probeIdmap(path: string): Promise<number> -- 0, or the errno that refused an idmapped mount of `path`.
static napi_value ProbeIdmap(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  if (argc < 1 || !(r->s[0] = string_arg(env, argv[0]))) {
    free_request(r);
    return throw_type(env, "probeIdmap(path) takes a path");
  }
  r->kind = PROBE_IDMAP;
  return queue(env, r, "ctrexec_probe_idmap");
}

// withFsIds(uid, gid, fn: () => T): T -- fn is called on this (the main) thread with fsuid/fsgid uid/gid and
// the effective capabilities raised to the permitted set; all put back afterwards, also when fn throws (its
// exception stays pending and reaches the caller). fn must be synchronous: what it leaves for later runs with
// the process's own ids.
static napi_value WithFsIds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t uid, gid;
  napi_valuetype t = napi_undefined;
  if (argc >= 3) napi_typeof(env, argv[2], &t);
  if (argc < 3 || !uint_arg(env, argv[0], MAX_ID, &uid) || !uint_arg(env, argv[1], MAX_ID, &gid) || t != napi_function) {
    return throw_type(env, "withFsIds(uid, gid, fn) takes two ids and a function");
  }
  thread_ids saved;
  failure f = {0};
  if (become_ids(uid, gid, &saved, &f) < 0) {
    napi_throw(env, failure_error(env, &f));
    return NULL;
  }
  napi_value undef, result = NULL;
  napi_get_undefined(env, &undef);
  napi_status status = napi_call_function(env, undef, argv[2], 0, NULL, &result);
  // Only syscalls until the return: with fn's exception pending, most N-API calls would fail.
  restore_ids(&saved);
  return status == napi_ok ? result : NULL;
}

// mountFlags(path: string): number -- statvfs(2)'s ST_RDONLY | ST_NOSUID | ST_NODEV | ST_NOEXEC bits.
static napi_value MountFlags(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *path = argc >= 1 ? string_arg(env, argv[0]) : NULL;
  if (!path) return throw_type(env, "mountFlags(path) takes a path");
  struct statvfs st;
  napi_value v = NULL;
  if (statvfs(path, &st) < 0) throw_errno(env, errno, "statvfs", path);
  else napi_create_uint32(env, (uint32_t)(st.f_flag & (ST_RDONLY | ST_NOSUID | ST_NODEV | ST_NOEXEC)), &v);
  free(path);
  return v;
}

// flock(fd: number, op: number): void -- flock(2); blocks this thread while another holder has the lock.
static napi_value Flock(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd, op;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &op) != napi_ok ||
      (op & ~(LOCK_SH | LOCK_EX | LOCK_UN | LOCK_NB))) {
    return throw_type(env, "flock(fd, op) takes an fd and LOCK_SH, LOCK_EX or LOCK_UN (| LOCK_NB)");
  }
  int rc;
  while ((rc = flock(fd, op)) < 0 && errno == EINTR) {
  }
  if (rc < 0) napi_throw(env, errno_error(env, errno, "flock", NULL, "flock fd %d", fd));
  return NULL;
}

void register_idmap(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"openUserns", OpenUserns}, {"idmapMount", IdmapMount}, {"mountAsIds", MountAsIds}, {"probeIdmap", ProbeIdmap},
      {"withFsIds", WithFsIds},   {"mountFlags", MountFlags}, {"flock", Flock},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn);
    napi_set_named_property(env, exports, fns[i].name, fn);
  }
}
