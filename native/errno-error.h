// Node-style system errors for the addon's C files: `code` ("ENOENT", libuv's name for the errno, as Node's own
// errors have), `errno` (negative, as Node's), `syscall`, `path` where there is one, and the message
// "CODE: description, <what>". One builder, so every native error reads and maps (errors.ts) alike.
#ifndef CTREXEC_ERRNO_ERROR_H
#define CTREXEC_ERRNO_ERROR_H
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <node_api.h>
#include <uv.h>

/** The error for `err` (a positive errno) in `syscall`; `path` may be NULL; `fmt` says what was being done. */
static inline napi_value errno_error(napi_env env, int err, const char *syscall, const char *path, const char *fmt, ...) {
  char what[PATH_MAX + 256];
  char buf[sizeof what + 128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  snprintf(buf, sizeof buf, "%s: %s, %s", uv_err_name(-err), strerror(err), what);
  napi_value msg, code, error, errnum, sys;
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, uv_err_name(-err), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, -err, &errnum);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "errno", errnum);
  napi_set_named_property(env, error, "syscall", sys);
  if (path) {
    napi_value p;
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &p);
    napi_set_named_property(env, error, "path", p);
  }
  return error;
}

/** Throws errno_error(syscall 'path') and returns NULL, for a napi callback to return. */
static inline napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  napi_throw(env, errno_error(env, err, syscall, path, "%s '%s'", syscall, path ? path : ""));
  return NULL;
}

/** Settles a promise of nothing: resolved when `error` is NULL, else rejected with it (threadpool work's end). */
static inline void settle_void(napi_env env, napi_deferred deferred, napi_value error) {
  if (error) {
    napi_reject_deferred(env, deferred, error);
    return;
  }
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_resolve_deferred(env, deferred, undef);
}
#endif
