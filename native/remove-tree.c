// removeTree(dir): removes a directory tree a container may still be writing (an overlay's upper dir whose task
// could not be deleted, a dead run's dir), fd-relative, on the libuv threadpool (a tree can be large and the
// event loop must not wait on it). A path-based recursive removal (lstat, readdir, unlink(parent/child)) can be
// redirected by a container that swaps a directory for a symlink to `/` between two steps, and ctrexec, root,
// then deletes host files. Here every name is acted on in an opened directory's fd: a directory is entered only
// through openat(O_DIRECTORY|O_NOFOLLOW) (never a symlink, a device or a FIFO), anything else is unlinkat'ed in
// its parent (a symlink itself, never its target).
//
// Never crosses into another mount: a directory on another device, or the root of a mount of the same filesystem
// (statx STATX_ATTR_MOUNT_ROOT, Linux 5.8+), is left in place and reported (the caller detaches what it knows of
// first). Depth is unbounded with a bounded number of fds (a container can build a chain 100 000 deep): at
// MAX_DEPTH the deep directory's subdirectories are renamed up into the top directory (same filesystem) under a
// fresh name and removed from there later. Against a live writer the work is bounded (MAX_ENTRIES, IDLE_PASSES)
// and ends with an error naming what is left.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <node_api.h>
#include "errno-error.h"
#include <uv.h>

#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/** Open directories at once (each a DIR of ~32 KiB and its fd). */
#define MAX_DEPTH 128
/** Entries looked at in all, for a tree a live container keeps filling: then an error, never an endless loop. */
#define MAX_ENTRIES 20000000L
/** Passes over the top directory that moved nothing up yet found it not empty (a writer adds as we remove). */
#define IDLE_PASSES 8
/**
 * However much each pass moved up: a writer that keeps building chains deeper than MAX_DEPTH resets the idle
 * count every pass. 100 000 levels take ~10 s here; past this, an error, and what is left stays for prune.
 */
#define MAX_SECONDS 60

#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  int err;
  char detail[PATH_MAX + 256];
} rm_request;

struct level {
  /** dirfd(dir): names are opened and removed relative to it. */
  int fd;
  DIR *dir;
  char name[NAME_MAX + 1];
};

/**
 * Whether `fd` (a directory of ours) is on another filesystem than the top (`top_dev`; 0: this is the top, set
 * it), or the root of a mount even of the same filesystem (a bind mount). 1, 0, or -errno. One statx: this
 * runs for every directory of the tree.
 */
static int is_mount(int fd, dev_t *top_dev) {
  struct statx stx;
  dev_t dev;
  if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_TYPE, &stx) == 0) {
    dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
    if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) return 1;
  } else {
    // No statx (Linux < 4.11): the device alone; a bind mount of the same filesystem is not seen.
    struct stat st;
    if (errno != ENOSYS || fstat(fd, &st) < 0) return -errno;
    dev = st.st_dev;
  }
  if (*top_dev == 0) *top_dev = dev;
  return dev != *top_dev;
}

/** Records the first failure (the one reported); later ones are the same story or its consequence. */
static void fail(rm_request *r, int err, const char *what, struct level *stack, int depth, const char *name) {
  if (r->err) return;
  r->err = err;
  size_t n = (size_t)snprintf(r->detail, sizeof r->detail, "%s %s", what, r->path);
  for (int i = 1; i <= depth && n < sizeof r->detail; i++)
    n += (size_t)snprintf(r->detail + n, sizeof r->detail - n, "/%s", stack[i].name);
  if (name && n < sizeof r->detail) snprintf(r->detail + n, sizeof r->detail - n, "/%s", name);
}

/** Moves directory `name` of `dirfd` into the top directory under a fresh name. 0 or an errno. */
static int move_up(int dirfd, const char *name, int topfd, unsigned long *seq) {
  char fresh[64];
  for (int tries = 0; tries < 1000; tries++) {
    snprintf(fresh, sizeof fresh, ".ctrexec-rm-%d-%lu", getpid(), (*seq)++);
    if (syscall(SYS_renameat2, dirfd, name, topfd, fresh, RENAME_NOREPLACE) == 0) return 0;
    if (errno == EINVAL) {
      // A filesystem without RENAME_NOREPLACE: a name nobody else uses is still overwritten by nothing
      // (renameat replaces only an empty directory or a non-directory, and both are ours to remove).
      if (renameat(dirfd, name, topfd, fresh) == 0) return 0;
    }
    if (errno != EEXIST && errno != ENOTEMPTY) return errno;
  }
  return EEXIST;
}

/** Empties and removes the directory `topfd` (opened from `r->path`). Sets r->err on failure. */
static void remove_contents(rm_request *r, int topfd, dev_t top_dev_in) {
  dev_t top_dev = top_dev_in;
  struct level *stack = calloc(MAX_DEPTH, sizeof *stack);
  if (!stack) {
    r->err = ENOMEM;
    snprintf(r->detail, sizeof r->detail, "removing %s", r->path);
    return;
  }
  int depth = 0, top_dup = dup(topfd);
  stack[0].fd = topfd;
  stack[0].dir = top_dup < 0 ? NULL : fdopendir(top_dup);
  if (!stack[0].dir) {
    if (top_dup >= 0) close(top_dup);
    fail(r, errno, "reading", stack, 0, NULL);
    free(stack);
    return;
  }
  long budget = MAX_ENTRIES;
  unsigned long seq = 0;
  int idle = 0;
  struct timespec started;
  clock_gettime(CLOCK_MONOTONIC, &started);
  for (;;) {
    int moved = 0;
    rewinddir(stack[0].dir);
    for (;;) {
      errno = 0;
      struct dirent *e = readdir(stack[depth].dir);
      if (!e) {
        if (errno) fail(r, errno, "reading", stack, depth, NULL);
        if (depth == 0) break;
        // Done with this level: it is empty unless something wrote into it meanwhile (then the next pass).
        closedir(stack[depth].dir);
        depth--;
        if (unlinkat(stack[depth].fd, stack[depth + 1].name, AT_REMOVEDIR) < 0) {
          // ENOTEMPTY/EEXIST/ENOTDIR: written into or swapped since; the next pass sees it again.
          if (errno != ENOTEMPTY && errno != EEXIST && errno != ENOTDIR && errno != ENOENT)
            fail(r, errno, "removing", stack, depth, stack[depth + 1].name);
        }
        continue;
      }
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      if (--budget < 0) {
        fail(r, EAGAIN, "still being written to after " "20000000" " entries:", stack, 0, NULL);
        goto out;
      }
      int cur = stack[depth].fd;
      int fd = openat(cur, e->d_name, DIR_FLAGS);
      if (fd < 0) {
        if (errno == ENOTDIR || errno == ELOOP) {
          // Not a directory (a symlink too: unlinkat removes the link itself).
          if (unlinkat(cur, e->d_name, 0) < 0) {
            // EISDIR: swapped for a directory since, the next pass sees it.
            if (errno != EISDIR && errno != ENOENT) fail(r, errno, "removing", stack, depth, e->d_name);
          }
        } else if (errno != ENOENT) {
          fail(r, errno, "opening", stack, depth, e->d_name);
        }
        continue;
      }
      int mount = is_mount(fd, &top_dev);
      if (mount != 0) {
        // Never walked: emptying it would empty a filesystem mounted there (a rootfs, a host directory).
        close(fd);
        if (mount > 0) fail(r, EBUSY, "a mount point is left below", stack, depth, e->d_name);
        else fail(r, -mount, "stat of", stack, depth, e->d_name);
        continue;
      }
      if (depth + 1 >= MAX_DEPTH) {
        close(fd);
        int err = move_up(cur, e->d_name, stack[0].fd, &seq);
        if (err == 0) moved = 1;
        else if (err != ENOENT) fail(r, err, "moving up", stack, depth, e->d_name);
        continue;
      }
      DIR *dir = fdopendir(fd);
      if (!dir) {
        fail(r, errno, "reading", stack, depth, e->d_name);
        close(fd);
        continue;
      }
      depth++;
      stack[depth].fd = fd;
      stack[depth].dir = dir;
      snprintf(stack[depth].name, sizeof stack[depth].name, "%s", e->d_name);
    }
    // A failure that another pass will not cure (a mount, EACCES, EIO...): stop, what is left stays.
    if (r->err) goto out;
    // Empty now? Whatever this pass saw, a writer may have added entries behind it, so look again.
    rewinddir(stack[0].dir);
    int empty = 1;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(stack[0].dir)) != NULL)
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
        empty = 0;
        break;
      }
    if (empty) break;
    // Not empty after a pass that moved nothing up: something writes into the tree as we remove it (or
    // swapped a name between our steps). A few more passes, then an error rather than an endless race.
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - started.tv_sec > MAX_SECONDS) {
      fail(r, EAGAIN, "still being written to (not empty after 60 s):", stack, 0, NULL);
      goto out;
    }
    if (moved) idle = 0;
    else if (++idle > IDLE_PASSES) {
      fail(r, EAGAIN, "still being written to (entries keep appearing):", stack, 0, NULL);
      goto out;
    }
  }
out:
  while (depth > 0) closedir(stack[depth--].dir);
  closedir(stack[0].dir);
  free(stack);
}

static void remove_tree(rm_request *r) {
  int topfd = open(r->path, DIR_FLAGS);
  if (topfd < 0) {
    if (errno == ENOENT) return; // already gone
    r->err = errno;
    snprintf(r->detail, sizeof r->detail, "opening %s", r->path);
    return;
  }
  struct stat st;
  if (fstat(topfd, &st) < 0) {
    r->err = errno;
    snprintf(r->detail, sizeof r->detail, "stat of %s", r->path);
    close(topfd);
    return;
  }
  char *slash = strrchr(r->path, '/');
  dev_t top_dev = 0;
  int mount = is_mount(topfd, &top_dev);
  if (mount != 0) {
    r->err = mount > 0 ? EBUSY : -mount;
    snprintf(r->detail, sizeof r->detail, mount > 0 ? "%s is a mount point" : "stat of %s", r->path);
    close(topfd);
    return;
  }
  remove_contents(r, topfd, top_dev);
  if (r->err) {
    close(topfd);
    return;
  }
  // The top itself, by its name in its parent (a directory of ctrexec's, not the container's), and only if
  // that name is still the directory just emptied.
  char *parent = strdup(r->path);
  const char *base = r->path;
  int parentfd = -1;
  if (parent && slash) {
    size_t plen = (size_t)(slash - r->path);
    parent[plen ? plen : 1] = '\0';
    base = slash + 1;
    parentfd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
  } else if (parent) {
    parentfd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  }
  free(parent);
  struct stat now;
  if (parentfd < 0) {
    r->err = errno ? errno : ENOMEM;
    snprintf(r->detail, sizeof r->detail, "opening the parent of %s", r->path);
  } else if (fstatat(parentfd, base, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino) {
    if (unlinkat(parentfd, base, AT_REMOVEDIR) < 0 && errno != ENOENT) {
      r->err = errno;
      snprintf(r->detail, sizeof r->detail, "removing %s", r->path);
    }
  }
  if (parentfd >= 0) close(parentfd);
  close(topfd);
}

static void execute(napi_env env, void *data) {
  (void)env;
  remove_tree(data);
}

static void complete(napi_env env, napi_status status, void *data) {
  rm_request *r = data;
  int err = status == napi_ok ? r->err : EIO;
  settle_void(env, r->deferred, err ? errno_error(env, err, "removeTree", r->path, "%s", r->detail) : NULL);
  napi_delete_async_work(env, r->work);
  free(r->path);
  free(r);
}

// removeTree(path: string): Promise<void>
static napi_value RemoveTree(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok || len == 0) {
    napi_throw_type_error(env, NULL, "removeTree(path) takes a path");
    return NULL;
  }
  rm_request *r = calloc(1, sizeof *r);
  if (!r || !(r->path = malloc(len + 1))) {
    free(r);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], r->path, len + 1, &len);
  if (strlen(r->path) != len || r->path[0] != '/') {
    // A NUL byte would make C remove a shorter path: another directory. Relative: whose cwd?
    free(r->path);
    free(r);
    napi_throw_type_error(env, NULL, "removeTree(path) takes an absolute path without NUL bytes");
    return NULL;
  }
  napi_value promise, name;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, "ctrexec_remove_tree", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}

void register_remove_tree(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "removeTree", NAPI_AUTO_LENGTH, RemoveTree, NULL, &fn);
  napi_set_named_property(env, exports, "removeTree", fn);
}
