// mkfifo(2) for Node, which has no binding for it. One syscall per FIFO keeps FIFO creation
// off the run's critical path (spawning mkfifo(1) costs ~10 ms per run, ~5% of a run).
// Also fcntl(F_SETPIPE_SZ): a bigger FIFO buffer lets the shim hand over bulk output with fewer wake-ups.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <node_api.h>
#include "errno-error.h"

// mkfifo(path: string, mode: number): void
static napi_value Mkfifo(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "mkfifo(path, mode) takes two arguments");
    return NULL;
  }
  char path[4096];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "path must be a string");
    return NULL;
  }
  if (len >= sizeof path - 1) {
    napi_throw_range_error(env, NULL, "path is too long");
    return NULL;
  }
  uint32_t mode = 0;
  if (napi_get_value_uint32(env, argv[1], &mode) != napi_ok) {
    napi_throw_type_error(env, NULL, "mode must be a number");
    return NULL;
  }
  if (mkfifo(path, (mode_t)(mode & 07777)) != 0) return throw_errno(env, errno, "mkfifo", path);
  return NULL;
}

// setPipeSize(fd: number, bytes: number): number -- the size the kernel granted, or -errno.
static napi_value SetPipeSize(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1, bytes = 0;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &bytes) != napi_ok) {
    napi_throw_type_error(env, NULL, "setPipeSize(fd, bytes) takes two numbers");
    return NULL;
  }
  int got = fcntl(fd, F_SETPIPE_SZ, bytes);
  napi_create_int32(env, got < 0 ? -errno : got, &result);
  return result;
}

// trimHeap(): boolean -- gives free heap memory back to the kernel (glibc keeps it after bulk output).
static napi_value TrimHeap(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
#ifdef __GLIBC__
  napi_get_boolean(env, malloc_trim(0) != 0, &result);
#else
  napi_get_boolean(env, false, &result);
#endif
  return result;
}

void register_mount(napi_env env, napi_value exports);
void register_idmap(napi_env env, napi_value exports);
void register_safe_fs(napi_env env, napi_value exports);

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "mkfifo", NAPI_AUTO_LENGTH, Mkfifo, NULL, &fn);
  napi_set_named_property(env, exports, "mkfifo", fn);
  napi_create_function(env, "setPipeSize", NAPI_AUTO_LENGTH, SetPipeSize, NULL, &fn);
  napi_set_named_property(env, exports, "setPipeSize", fn);
  napi_create_function(env, "trimHeap", NAPI_AUTO_LENGTH, TrimHeap, NULL, &fn);
  napi_set_named_property(env, exports, "trimHeap", fn);
  register_mount(env, exports);
  register_idmap(env, exports);
  register_safe_fs(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
