/* SPDX-License-Identifier: MIT */
/* Helpers shared by d-pull and d-run: allocation, bounded reads, JSON. */
#define _GNU_SOURCE
#include "common.h"

void *xrealloc(void *p, size_t n)
{
	if (!(p = realloc(p, n ? n : 1)))
		errx(1, "out of memory");
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;
	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		errx(1, "out of memory");
	return s;
}

char *read_fd(int fd, const char *path, size_t max)
{
	char *buf;
	ssize_t n, len = 0;
	if (fd < 0 && errno == ENOENT)
		return NULL;
	if (fd < 0)
		err(1, "%s", path);
	buf = xrealloc(NULL, max + 1);
	while ((n = read(fd, buf + len, max + 1 - len)) > 0)
		len += n;
	if (n < 0 || close(fd))
		err(1, "%s", path);
	if ((size_t)len > max)
		errx(1, "%s: larger than %zu bytes", path, max);
	buf[len] = '\0';
	return buf;
}

cJSON *parse_object(const char *text, const char *what)
{
	cJSON *json = cJSON_Parse(text);
	if (!cJSON_IsObject(json))
		errx(1, "%s: not a JSON object", what);
	return json;
}

const cJSON *json_get(const cJSON *obj, const char *key, cJSON_bool (*is)(const cJSON *),
                      const char *type, const char *what)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (item && !cJSON_IsNull(item) && !is(item))
		errx(1, "%s: \"%s\" is not %s", what, key, type);
	return cJSON_IsNull(item) ? NULL : item;
}

const char *json_string(const cJSON *obj, const char *key, const char *what)
{
	return cJSON_GetStringValue(json_get(obj, key, cJSON_IsString, "a string", what));
}
