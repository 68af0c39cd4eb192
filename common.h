/* SPDX-License-Identifier: MIT */
/* Helpers shared by d-pull and d-run: allocation, bounded reads, JSON. Errors use err(3). */
#include <cjson/cJSON.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

void *xrealloc(void *p, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The whole file open at fd (path names it), at most max bytes; NULL if fd < 0 for ENOENT. */
char *read_fd(int fd, const char *path, size_t max);
/* JSON text that must be an object; what names it in errors. */
cJSON *parse_object(const char *text, const char *what);
/* Member key of obj (what names obj in errors), NULL if missing or null, else of the type. */
const cJSON *json_get(const cJSON *obj, const char *key, cJSON_bool (*is)(const cJSON *),
                      const char *type, const char *what);
const char *json_string(const cJSON *obj, const char *key, const char *what);
