/* SPDX-License-Identifier: MIT */
/* Helpers shared by d-pull and d-run: errors, allocation, bounded reads, JSON. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "common.h"

const char *progname = "d-utils";
void (*die_hook)(void);

static void vmessage(const char *fmt, va_list ap)
{
	int saved = errno;
	size_t len = strlen(fmt);

	fprintf(stderr, "%s: ", progname);
	vfprintf(stderr, fmt, ap);
	if (len && fmt[len - 1] == ':')
		fprintf(stderr, " %s", strerror(saved));
	fputc('\n', stderr);
}

void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage(fmt, ap);
	va_end(ap);
	if (die_hook)
		die_hook();
	exit(1);
}

void warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage(fmt, ap);
	va_end(ap);
}

void *xrealloc(void *p, size_t n)
{
	if (!(p = realloc(p, n ? n : 1)))
		die("out of memory");
	return p;
}

void *xmalloc(size_t n)
{
	return xrealloc(NULL, n);
}

char *xstrdup(const char *s)
{
	return strcpy(xmalloc(strlen(s) + 1), s);
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		die("out of memory");
	va_end(ap);
	return s;
}

int open_at(int dirfd, const char *path, int flags, unsigned long long resolve)
{
	struct open_how how = { .flags = flags | O_CLOEXEC, .resolve = resolve };

	return syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

char *read_file_at(int dirfd, const char *path, size_t max, unsigned long long resolve)
{
	size_t len = 0;
	ssize_t n;
	char *buf;
	int fd;

	if ((fd = open_at(dirfd, path, O_RDONLY, resolve)) < 0) {
		if (errno == ENOENT)
			return NULL;
		die("open %s:", path);
	}
	buf = xmalloc(max + 1);
	while ((n = read(fd, buf + len, max + 1 - len)) > 0 && (len += n) <= max)
		;
	if (n < 0)
		die("read %s:", path);
	if (len > max)
		die("%s: larger than %zu bytes", path, max);
	close(fd);
	buf[len] = '\0';
	return buf;
}

cJSON *parse_object(const char *text, const char *what)
{
	cJSON *json = cJSON_Parse(text);

	if (!cJSON_IsObject(json))
		die("%s: not a JSON object", what);
	return json;
}

const char *json_string(const cJSON *obj, const char *key, const char *what)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (item && !cJSON_IsNull(item) && !cJSON_IsString(item))
		die("%s: \"%s\" is not a string", what, key);
	return cJSON_IsString(item) ? item->valuestring : NULL;
}
