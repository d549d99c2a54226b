// fd-relative file operations for trees a container can write (rootfs, mount sources): openat2 with
// RESOLVE_IN_ROOT (or an O_NOFOLLOW fd walk that resolves symlinks inside the root where the kernel has no
// openat2, < 5.6, or a seccomp filter refuses it), and openat, mkdirat and unlinkat of one name in a directory
// fd. Synchronous: each is a syscall of microseconds on a local filesystem, and the run path calls them
// synchronously (src/fs/root-path.ts). Node's own fs functions take the returned fds for fstat, fchmod, fchown,
// read and close. (Removing a whole tree can take long: native/remove-tree.c, on the threadpool.)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <node_api.h>
#include "errno-error.h"
#include <uv.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef RESOLVE_NO_MAGICLINKS
#define RESOLVE_NO_XDEV 0x01
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_NO_SYMLINKS 0x04
#define RESOLVE_BENEATH 0x08
#define RESOLVE_IN_ROOT 0x10
#endif

struct ctrexec_open_how {
  uint64_t flags;
  uint64_t mode;
  uint64_t resolve;
};

/** Set by tests to take the fd walk instead of openat2. */
static int force_walk = 0;
/** openat2 is missing (ENOSYS: Linux < 5.6) or refused (EPERM: a seccomp filter, in a container): the walk. */
static int openat2_unusable = 0;
/** openat2 fails with EAGAIN for `..` while any rename happens on the host (the kernel's rename seqlock; a
 * container renaming in a loop can keep it so): a few retries, then the walk, which has no such failure. */
#define EAGAIN_RETRIES 4
/** openat2 calls that met EAGAIN (tests: to know the rename race they run was met, not missed). */
static int64_t eagain_count = 0;

/*
 * The fallback for kernels without openat2: resolves `path` below `rootfd` one component at a time with
 * O_PATH|O_NOFOLLOW, reading each symlink with readlinkat and resolving its target inside the root (absolute
 * targets restart at the root, `..` never climbs above it), as RESOLVE_IN_ROOT does. Nothing is ever followed
 * by the kernel, so magic links are not followed either. Returns an fd or -errno.
 */
#define MAX_LINKS 255
/** Directories held open at once: PATH_MAX allows ~2048 components, but no real path nests this deep, and an fd
 * each up to the process's limit would fail elsewhere (EMFILE). Deeper: ENAMETOOLONG. */
#define MAX_DEPTH 256
static int walk_in_root(int rootfd, const char *path, int flags, int resolve) {
  size_t cap = PATH_MAX * 2;
  char *rest = malloc(cap);
  char *link = malloc(PATH_MAX + 1);
  int *stack = malloc(sizeof(int) * MAX_DEPTH);
  int depth = 0, links = 0, result = -EINVAL, final = -1;
  if (stack) stack[0] = -1;
  if (!rest || !link || !stack) {
    result = -ENOMEM;
    goto out;
  }
  if (strlen(path) >= cap) {
    result = -ENAMETOOLONG;
    goto out;
  }
  strcpy(rest, path);
  stack[0] = openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (stack[0] < 0) {
    result = -errno;
    goto out;
  }
  for (;;) {
    char *p = rest;
    while (*p == '/') p++;
    if (*p == '\0') break;
    char *end = strchr(p, '/');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char name[NAME_MAX + 1];
    if (len > NAME_MAX) {
      result = -ENAMETOOLONG;
      goto out;
    }
    memcpy(name, p, len);
    name[len] = '\0';
    memmove(rest, p + len, strlen(p + len) + 1);
    const char *q = rest;
    while (*q == '/') q++;
    int last = *q == '\0';
    // `name/` at the end: as the kernel does, a symlink there is followed and the result must be a directory.
    int must_dir = last && rest[0] == '/';
    if (strcmp(name, ".") == 0) continue;
    if (strcmp(name, "..") == 0) {
      if (depth > 0) close(stack[depth--]);
      continue;
    }
    int fd = openat(stack[depth], name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      result = -errno;
      goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
      result = -errno;
      close(fd);
      goto out;
    }
    if (S_ISLNK(st.st_mode) && !(last && (flags & O_NOFOLLOW) && !must_dir)) {
      if (resolve & RESOLVE_NO_SYMLINKS) {
        close(fd);
        result = -ELOOP;
        goto out;
      }
      ssize_t n = readlinkat(fd, "", link, PATH_MAX);
      close(fd);
      if (n < 0) {
        result = -errno;
        goto out;
      }
      link[n] = '\0';
      if (++links > MAX_LINKS) {
        result = -ELOOP;
        goto out;
      }
      size_t rl = strlen(rest);
      if ((size_t)n + 1 + rl + 1 > cap) {
        result = -ENAMETOOLONG;
        goto out;
      }
      // The target, then what was left ("" stays "": a `/` added after a final link would demand a directory).
      size_t sep = rl > 0 ? 1 : 0;
      memmove(rest + n + sep, rest, rl + 1);
      memcpy(rest, link, (size_t)n);
      if (sep) rest[n] = '/';
      if (link[0] == '/')
        while (depth > 0) close(stack[depth--]);
      continue;
    }
    if (last) {
      if (must_dir && !S_ISDIR(st.st_mode)) {
        close(fd);
        result = -ENOTDIR;
        goto out;
      }
      final = fd;
      break;
    }
    if (!S_ISDIR(st.st_mode)) {
      close(fd);
      result = -ENOTDIR;
      goto out;
    }
    if (depth + 1 >= MAX_DEPTH) {
      close(fd);
      result = -ENAMETOOLONG;
      goto out;
    }
    stack[++depth] = fd;
  }
  if (final < 0) {
    final = openat(stack[depth], ".", O_PATH | O_CLOEXEC);
    if (final < 0) {
      result = -errno;
      goto out;
    }
  }
  struct stat st;
  if (fstat(final, &st) < 0) {
    result = -errno;
    close(final);
    goto out;
  }
  if ((flags & O_DIRECTORY) && !S_ISDIR(st.st_mode)) {
    close(final);
    result = S_ISLNK(st.st_mode) ? -ELOOP : -ENOTDIR;
    goto out;
  }
  if (flags & O_PATH) {
    result = final;
    goto out;
  }
  // A real open of the object found: through its own fd, so nothing can have replaced it. Never a symlink.
  if (S_ISLNK(st.st_mode)) {
    close(final);
    result = -ELOOP;
    goto out;
  }
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", final);
  int fd = open(proc, (flags & ~O_NOFOLLOW) | O_CLOEXEC);
  result = fd < 0 ? -errno : fd;
  close(final);
out:
  if (stack)
    for (int i = 0; i <= depth && stack[0] >= 0; i++) close(stack[i]);
  free(stack);
  free(link);
  free(rest);
  return result;
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  return napi_get_value_int32(env, v, out) == napi_ok;
}

/** A copy of a JS string, or NULL: not a string, or one with a NUL byte (C would see a shorter, other name). */
static char *get_string(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s) napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (s && strlen(s) != len) {
    free(s);
    return NULL;
  }
  return s;
}

static napi_value int_value(napi_env env, int v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

// openat2(dirfd: number, path: string, flags: number, mode: number, resolve: number): number (an fd)
static napi_value Openat2(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t dirfd, flags, mode, resolve;
  char *path = argc == 5 ? get_string(env, argv[1]) : NULL;
  if (!path || !get_int(env, argv[0], &dirfd) || !get_int(env, argv[2], &flags) || !get_int(env, argv[3], &mode) ||
      !get_int(env, argv[4], &resolve)) {
    free(path);
    napi_throw_type_error(env, NULL, "openat2(dirfd, path, flags, mode, resolve) takes five arguments (a path without NUL bytes)");
    return NULL;
  }
  int fd = -1, walk = force_walk || openat2_unusable;
  if (!walk) {
    struct ctrexec_open_how how = {.flags = (uint64_t)(uint32_t)(flags | O_CLOEXEC), .mode = (uint64_t)mode, .resolve = (uint64_t)resolve};
    for (int i = 0;; i++) {
      fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
      if (fd >= 0) break;
      fd = -errno;
      if (fd != -EAGAIN) break;
      eagain_count++;
      if (i + 1 >= EAGAIN_RETRIES) {
        walk = 1;
        break;
      }
    }
    if (fd == -ENOSYS) walk = openat2_unusable = 1;
  }
  if (walk) {
    // The walk does RESOLVE_IN_ROOT (and RESOLVE_NO_SYMLINKS) only, and never creates (nothing here asks to).
    // Where it cannot stand in, openat2's own EAGAIN is the answer (ENOSYS where there is no openat2).
    if (!(resolve & RESOLVE_IN_ROOT) || (flags & O_CREAT)) fd = fd == -EAGAIN ? -EAGAIN : -ENOSYS;
    else fd = walk_in_root(dirfd, path, flags, resolve);
  }
  if (fd < 0) {
    throw_errno(env, -fd, "openat2", path);
    free(path);
    return NULL;
  }
  free(path);
  return int_value(env, fd);
}

/** One name in a directory: not empty, no `/`, not `.` or `..` (which would leave the directory). */
static int bad_name(const char *name) {
  return name[0] == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
}

// openat(dirfd: number, name: string, flags: number, mode: number): number (an fd). One name, never a symlink.
static napi_value Openat(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t dirfd, flags, mode;
  char *path = argc == 4 ? get_string(env, argv[1]) : NULL;
  if (!path || !get_int(env, argv[0], &dirfd) || !get_int(env, argv[2], &flags) || !get_int(env, argv[3], &mode)) {
    free(path);
    napi_throw_type_error(env, NULL, "openat(dirfd, name, flags, mode) takes four arguments (a name without NUL bytes)");
    return NULL;
  }
  if (bad_name(path)) {
    throw_errno(env, EINVAL, "openat", path);
    free(path);
    return NULL;
  }
  int fd = openat(dirfd, path, flags | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) {
    throw_errno(env, errno, "openat", path);
    free(path);
    return NULL;
  }
  free(path);
  return int_value(env, fd);
}

// mkdirat(dirfd: number, name: string, mode: number): void
static napi_value Mkdirat(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t dirfd, mode;
  char *name = argc == 3 ? get_string(env, argv[1]) : NULL;
  if (!name || !get_int(env, argv[0], &dirfd) || !get_int(env, argv[2], &mode)) {
    free(name);
    napi_throw_type_error(env, NULL, "mkdirat(dirfd, name, mode) takes three arguments (a name without NUL bytes)");
    return NULL;
  }
  if (bad_name(name)) throw_errno(env, EINVAL, "mkdirat", name);
  else if (mkdirat(dirfd, name, (mode_t)mode) < 0) throw_errno(env, errno, "mkdirat", name);
  free(name);
  return NULL;
}

// unlinkat(dirfd: number, name: string, flags: number): void (AT_REMOVEDIR in flags for a directory)
static napi_value Unlinkat(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t dirfd, flags;
  char *name = argc == 3 ? get_string(env, argv[1]) : NULL;
  if (!name || !get_int(env, argv[0], &dirfd) || !get_int(env, argv[2], &flags)) {
    free(name);
    napi_throw_type_error(env, NULL, "unlinkat(dirfd, name, flags) takes three arguments (a name without NUL bytes)");
    return NULL;
  }
  if (bad_name(name)) throw_errno(env, EINVAL, "unlinkat", name);
  else if (unlinkat(dirfd, name, flags) < 0) throw_errno(env, errno, "unlinkat", name);
  free(name);
  return NULL;
}

// setOpenat2Walk(on: boolean): tests take the fallback walk on a kernel that has openat2.
static napi_value SetOpenat2Walk(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool on = false;
  if (argc >= 1) napi_get_value_bool(env, argv[0], &on);
  force_walk = on ? 1 : 0;
  return NULL;
}

// openat2EagainCount(): number, for tests.
static napi_value Openat2EagainCount(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_create_double(env, (double)eagain_count, &r);
  return r;
}

void register_remove_tree(napi_env env, napi_value exports);

/** Whether openat2 can be used here: a seccomp filter (a container's default profile) may refuse it. */
static void probe_openat2(void) {
  struct ctrexec_open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .mode = 0, .resolve = RESOLVE_IN_ROOT};
  int fd = (int)syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
  if (fd >= 0) close(fd);
  else if (errno == ENOSYS || errno == EPERM) openat2_unusable = 1;
}

void register_safe_fs(napi_env env, napi_value exports) {
  probe_openat2();
  register_remove_tree(env, exports);
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"openat2", Openat2}, {"openat", Openat}, {"mkdirat", Mkdirat}, {"unlinkat", Unlinkat}, {"setOpenat2Walk", SetOpenat2Walk},
      {"openat2EagainCount", Openat2EagainCount},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn);
    napi_set_named_property(env, exports, fns[i].name, fn);
  }
}
