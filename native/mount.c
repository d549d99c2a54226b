// mount(2) and umount2(2) for Node, on the libuv threadpool (a mount can block, e.g. on a dead network
// filesystem; the event loop must not). Spawning mount(8) and umount(8) instead costs ~10 ms per image root.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <node_api.h>
#include "errno-error.h"
#include "string-arg.h"

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *source;
  char *target;
  char *fstype;
  char *data;
  unsigned long flags;
  int is_umount;
  int err;
} request;


static void free_request(request *r) {
  free(r->source);
  free(r->target);
  free(r->fstype);
  free(r->data);
  free(r);
}

static void execute(napi_env env, void *data) {
  (void)env;
  request *r = data;
  int rc = r->is_umount ? umount2(r->target, (int)r->flags)
                        : mount(r->source, r->target, r->fstype, r->flags, r->data && r->data[0] ? r->data : NULL);
  r->err = rc == 0 ? 0 : errno;
}

static void complete(napi_env env, napi_status status, void *data) {
  request *r = data;
  int err = status == napi_ok ? r->err : EIO;
  const char *syscall = r->is_umount ? "umount2" : "mount";
  settle_void(env, r->deferred, err ? errno_error(env, err, syscall, NULL, "%s '%s'", syscall, r->target ? r->target : "") : NULL);
  napi_delete_async_work(env, r->work);
  free_request(r);
}

/** Queues `r` (taking it over) after checking what both calls need; throws and frees it otherwise. */
static napi_value queue(napi_env env, request *r) {
  if (!r->target) {
    free_request(r);
    napi_throw_type_error(env, NULL, "target must be a string");
    return NULL;
  }
  napi_value promise, name;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, r->is_umount ? "ctrexec_umount" : "ctrexec_mount", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}

// mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>
static napi_value Mount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  double flags = 0;
  if (argc < 5 || napi_get_value_double(env, argv[3], &flags) != napi_ok) {
    napi_throw_type_error(env, NULL, "mount(source, target, fstype, flags, data) takes five arguments");
    return NULL;
  }
  request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->source = string_arg(env, argv[0]);
  r->target = string_arg(env, argv[1]);
  r->fstype = string_arg(env, argv[2]);
  r->data = string_arg(env, argv[4]);
  r->flags = (unsigned long)flags;
  return queue(env, r);
}

// umount(target: string, flags: number): Promise<void>
static napi_value Umount(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t flags = 0;
  if (argc < 2 || napi_get_value_int32(env, argv[1], &flags) != napi_ok) {
    napi_throw_type_error(env, NULL, "umount(target, flags) takes two arguments");
    return NULL;
  }
  request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->target = string_arg(env, argv[0]);
  r->flags = (unsigned long)flags;
  r->is_umount = 1;
  return queue(env, r);
}

void register_mount(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "mount", NAPI_AUTO_LENGTH, Mount, NULL, &fn);
  napi_set_named_property(env, exports, "mount", fn);
  napi_create_function(env, "umount", NAPI_AUTO_LENGTH, Umount, NULL, &fn);
  napi_set_named_property(env, exports, "umount", fn);
}
