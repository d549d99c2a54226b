// A JS string argument as a C string, shared by the addon's modules.
#ifndef CTREXEC_STRING_ARG_H
#define CTREXEC_STRING_ARG_H
#include <stdlib.h>
#include <string.h>
#include <node_api.h>

/** A copy of a JS string, or NULL when `v` is not a string or holds a NUL byte (a path cut short there). */
static char *string_arg(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) return NULL;
  size_t len = 0;
  napi_get_value_string_utf8(env, v, NULL, 0, &len);
  char *s = malloc(len + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    return NULL;
  }
  return s;
}

#endif
