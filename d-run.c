/* SPDX-License-Identifier: MIT */
/* d-run: run a command in DIR/rootfs under bubblewrap, as DIR/config.json says: the image's
 * config (User, Env, WorkingDir, Hostname, Volumes, Entrypoint, Cmd) and the user's net and rw. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define MAX_CONFIG (1 << 20)
#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

static const char **argv_out;
static int argc_out;
static const char *dir, *path_env = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
static int dir_fd, root_fd, nbinds;
static struct { const char *dest, *host; } binds[64]; /* volumes, for check_command */

static void usage(int status)
{
	fprintf(status ? stderr : stdout, "usage: d-run [-h] [-v VOLUME]... [-e KEY=VALUE]... [-u USER] "
		"[-n|--net] [-w|--rw] [--debug] DIR [CMD...]\n");
	exit(status);
}

static void add(const char *arg)
{
	argv_out = xrealloc(argv_out, (argc_out + 2) * sizeof(*argv_out));
	argv_out[argc_out++] = arg;
	argv_out[argc_out] = NULL;
}

static void add3(const char *a, const char *b, const char *c)
{
	add(a);
	add(b);
	if (c)
		add(c);
}

static void add_env(const char *entry)
{
	char *key = xstrdup(entry), *value = strchr(key, '=');

	if (!value && !(value = getenv(key))) /* -e KEY passes the caller's value, if any */
		return;
	if (*value == '=')
		*value++ = '\0';
	if (!*key)
		die("environment entry \"%s\": empty name", entry);
	if (!strcmp(key, "PATH"))
		path_env = value;
	add3("--setenv", key, value);
}

/* Finds path inside the rootfs and creates what is missing of it (a file, when file is set,
 * else directories), never leaving the rootfs; returns it with every symlink resolved, so that
 * bwrap, which follows symlinks when it mounts, is given none. */
static char *mount_point(int root, const char *path, int file)
{
	char *p = xstrdup(path), *slash = p, link[64], host[PATH_MAX], top[PATH_MAX];
	int fd = -1, parent = dup(root), last;
	ssize_t n;

	while (slash) {
		while (*slash == '/')
			slash++;
		slash = strchr(slash, '/');
		last = !slash || !slash[strspn(slash, "/")];
		if (slash)
			*slash = '\0';
		if ((fd = open_at(root, p, O_PATH, IN_ROOT)) < 0 && errno == ENOENT) {
			char *name = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
			if (last && file)
				close(openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644));
			else
				mkdirat(parent, name, 0755);
			fd = open_at(root, p, O_PATH, IN_ROOT);
		}
		if (fd < 0)
			die("%s: %s:", dir, p);
		close(parent);
		parent = fd;
		if (slash)
			*slash = '/';
		if (last)
			break;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", parent);
	if ((n = readlink(link, host, sizeof(host) - 1)) < 0)
		die("%s:", link);
	host[n] = '\0';
	snprintf(link, sizeof(link), "/proc/self/fd/%d", root);
	if ((n = readlink(link, top, sizeof(top) - 1)) < 0)
		die("%s:", link);
	close(parent);
	free(p);
	return xstrdup(host[n] ? host + n : "/");
}

/* A line of passwd or group whose name, or number, is key; fields are split in place. */
static int find_entry(char *text, const char *key, char **fields, int nfields)
{
	char *line, *save = NULL;
	int i;

	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		for (i = 0; i < nfields; i++)
			fields[i] = strsep(&line, ":");
		if (fields[nfields - 1] && (!strcmp(fields[0], key) || !strcmp(fields[2], key)))
			return 1;
	}
	return 0;
}

static unsigned long parse_id(const char *s, const char *what)
{
	char *end;
	unsigned long id;

	errno = 0;
	id = strtoul(s, &end, 10);
	if (errno || !*s || *end || id >= 0xffffffffUL)
		die("%s: no such %s in the image", s, what);
	return id;
}

/* User is name, uid, name:group or uid:gid, looked up in the image's own files, never the host's. */
static void add_user(const char *spec, const char **home)
{
	char *user = xstrdup(spec), *group = strchr(user, ':'), *f[7], *text;
	const char *uid = user, *gid = "0";

	if (group)
		*group++ = '\0';
	text = read_file_at(root_fd, "/etc/passwd", MAX_CONFIG, IN_ROOT);
	if (text && find_entry(text, user, f, 7))
		uid = f[2], gid = f[3], *home = f[5];
	else
		parse_id(user, "user");
	text = group ? read_file_at(root_fd, "/etc/group", MAX_CONFIG, IN_ROOT) : NULL;
	if (group)
		gid = text && find_entry(text, group, f, 4) ? f[2] : group;
	add3("--uid", xasprintf("%lu", parse_id(uid, "user")), NULL);
	add3("--gid", xasprintf("%lu", parse_id(gid, "group")), NULL);
}

/* /path keeps its data in DIR/volumes/path; host:/path[:ro|:rw] binds a host path, a device under /dev. */
static void add_volume(const char *spec)
{
	char *s = xstrdup(spec), *dest = strchr(s, ':'), *mode = NULL, *host, *real;
	struct stat st;

	if (dest) {
		*dest++ = '\0';
		if ((mode = strchr(dest, ':')))
			*mode++ = '\0';
		if (mode && strcmp(mode, "ro") && strcmp(mode, "rw"))
			die("volume %s: the mode must be ro or rw", spec);
		host = s;
	} else {
		dest = s;
		host = xasprintf("%s%s", dir, mount_point(dir_fd, xasprintf("volumes/%s", dest), 0));
	}
	if (*dest != '/' || !*host)
		die("volume %s: want /path, host:/path, host:/path:ro or host:/path:rw", spec);
	if (!(real = realpath(host, NULL)) || stat(real, &st))
		die("volume %s: %s:", spec, host);
	dest = mount_point(root_fd, dest, !S_ISDIR(st.st_mode));
	add3(!strncmp(real, "/dev/", 5) ? "--dev-bind" : mode && !strcmp(mode, "ro") ? "--ro-bind" : "--bind",
		real, dest);
	if (nbinds == sizeof(binds) / sizeof(*binds))
		die("volume %s: too many volumes", spec);
	binds[nbinds].dest = dest;
	binds[nbinds++].host = real;
}

static void add_volumes(const cJSON *volumes)
{
	const cJSON *v;

	if (volumes && !cJSON_IsNull(volumes) && !cJSON_IsObject(volumes))
		die("%s/config.json: \"Volumes\" is not an object", dir);
	cJSON_ArrayForEach(v, volumes)
		add_volume(v->string);
}

static void add_strings(const cJSON *list, const char *key, void (*fn)(const char *))
{
	const cJSON *s;

	if (list && !cJSON_IsNull(list) && !cJSON_IsArray(list))
		die("%s/config.json: \"%s\" is not a list of strings", dir, key);
	cJSON_ArrayForEach(s, list) {
		if (!cJSON_IsString(s))
			die("%s/config.json: \"%s\" is not a list of strings", dir, key);
		fn(s->valuestring);
	}
}

/* Whether path names an executable file in the sandbox: in a volume, or else in the rootfs. */
static int executable(const char *path)
{
	struct stat st;
	size_t n;
	int i, fd, found;

	for (i = nbinds - 1; i >= 0; i--)
		if (!strncmp(path, binds[i].dest, n = strlen(binds[i].dest)) && (!path[n] || path[n] == '/'))
			break;
	if (i >= 0)
		found = !stat(xasprintf("%s%s", binds[i].host, path + n), &st);
	else if ((found = (fd = open_at(root_fd, path, O_PATH, IN_ROOT)) >= 0 && !fstat(fd, &st)))
		close(fd);
	if (found && (!S_ISREG(st.st_mode) || !(st.st_mode & 0111)))
		errno = EACCES;
	return found && errno != EACCES;
}

/* bwrap says 1 when exec fails; a shell says 127 for a command not found, 126 for one that cannot run. */
static void check_command(const char *cmd, const char *workdir)
{
	char *path = xstrdup(path_env), *d;

	if (strchr(cmd, '/')) {
		if (executable(*cmd == '/' ? cmd : xasprintf("%s/%s", workdir, cmd)))
			return;
	} else {
		for (errno = ENOENT; (d = strsep(&path, ":"));)
			if (executable(xasprintf("%s/%s", *d ? d : ".", cmd)))
				return;
	}
	warn("%s: %s", cmd, errno == ENOENT ? "command not found" : "permission denied");
	exit(errno == ENOENT ? 127 : 126);
}

static void print_command(void)
{
	const char *s;
	int i;

	for (i = 0; i < argc_out; i++) {
		fputs(i ? " " : "", stderr);
		if (*argv_out[i] && strspn(argv_out[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			"0123456789_-+=/.,:@%") == strlen(argv_out[i])) {
			fputs(argv_out[i], stderr);
			continue;
		}
		fputc('\'', stderr);
		for (s = argv_out[i]; *s; s++)
			*s == '\'' ? fputs("'\\''", stderr) : fputc(*s, stderr);
		fputc('\'', stderr);
	}
	fputc('\n', stderr);
}

static int flag(const cJSON *config, const char *key)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(config, key);

	if (item && !cJSON_IsBool(item))
		die("%s/config.json: \"%s\" is not true or false", dir, key);
	return cJSON_IsTrue(item);
}

/* A 32-bit image (linux/386, linux/arm) runs with the 32-bit personality, as setarch gives. */
static void set_personality(void)
{
	char *text = read_file_at(dir_fd, "image.txt", MAX_CONFIG, 0), *platform;

	platform = text && strchr(text, '\n') ? strchr(text, '\n') + 1 : "";
	if ((!strncmp(platform, "linux/386\n", 10) || !strncmp(platform, "linux/arm/", 10)) &&
	    personality(PER_LINUX32) < 0)
		die("personality:");
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' }, { "volume", required_argument, NULL, 'v' },
		{ "env", required_argument, NULL, 'e' }, { "user", required_argument, NULL, 'u' },
		{ "net", no_argument, NULL, 'n' }, { "rw", no_argument, NULL, 'w' },
		{ "fakeroot", no_argument, NULL, 'r' }, { "debug", no_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	const char **volumes = xmalloc(argc * sizeof(*volumes)), **envs = xmalloc(argc * sizeof(*envs));
	const char *user = NULL, *home = "/", *workdir, *hostname;
	int nvolumes = 0, nenvs = 0, net = 0, rw = 0, debug = 0, command, c, i;
	cJSON *config;
	char *text;

	progname = "d-run";
	while ((c = getopt_long(argc, argv, "+hv:e:u:nwr", options, NULL)) != -1)
		switch (c) {
		case 'h': usage(0); break;
		case 'v': volumes[nvolumes++] = optarg; break;
		case 'e': envs[nenvs++] = optarg; break;
		case 'u': user = optarg; break;
		case 'r': user = "0:0"; break;
		case 'n': net = 1; break;
		case 'w': rw = 1; break;
		case 'd': debug = 1; break;
		default: usage(2);
		}
	if (optind >= argc)
		usage(2);
	dir = argv[optind++];
	if ((dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0 || !(dir = realpath(dir, NULL)))
		die("%s:", argv[optind - 1]);
	if ((root_fd = openat(dir_fd, "rootfs", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		die("%s/rootfs:", dir);
	errno = ENOENT;
	if (!(text = read_file_at(dir_fd, "config.json", MAX_CONFIG, 0)))
		die("%s/config.json:", dir);
	config = parse_object(text, xasprintf("%s/config.json", dir));
	net |= flag(config, "net");
	rw |= flag(config, "rw");
	if (!user)
		user = flag(config, "fakeroot") ? "0:0" : json_string(config, "User", "config.json");
	workdir = json_string(config, "WorkingDir", "config.json");
	workdir = workdir && *workdir ? workdir : "/";
	hostname = json_string(config, "Hostname", "config.json");

	add3("bwrap", "--unshare-all", "--unshare-user");
	add3("--die-with-parent", rw ? "--bind" : "--ro-bind", xasprintf("%s/rootfs", dir));
	add3("/", "--proc", mount_point(root_fd, "/proc", 0));
	add3("--dev", mount_point(root_fd, "/dev", 0), NULL);
	add3("--tmpfs", mount_point(root_fd, "/tmp", 0), NULL);
	if (net) {
		/* the host's resolv.conf is often a symlink: bind what it points to */
		add("--share-net");
		add3("--ro-bind", realpath("/etc/resolv.conf", NULL), mount_point(root_fd, "/etc/resolv.conf", 1));
		add3("--ro-bind", realpath("/etc/hosts", NULL), mount_point(root_fd, "/etc/hosts", 1));
	}
	if (hostname && *hostname)
		add3("--hostname", hostname, NULL);
	add_user(user && *user ? user : "0:0", &home);
	add3("--chdir", mount_point(root_fd, workdir, 0), "--clearenv");
	add_env(xasprintf("PATH=%s", path_env));
	add_env(xasprintf("HOME=%s", home));
	if (isatty(0) && getenv("TERM"))
		add_env(xasprintf("TERM=%s", getenv("TERM")));
	add_strings(cJSON_GetObjectItemCaseSensitive(config, "Env"), "Env", add_env);
	for (i = 0; i < nenvs; i++)
		add_env(envs[i]);
	add_volumes(cJSON_GetObjectItemCaseSensitive(config, "Volumes"));
	for (i = 0; i < nvolumes; i++)
		add_volume(volumes[i]);
	add("--");
	command = argc_out;
	add_strings(cJSON_GetObjectItemCaseSensitive(config, "Entrypoint"), "Entrypoint", add);
	if (optind < argc)
		while (optind < argc)
			add(argv[optind++]);
	else
		add_strings(cJSON_GetObjectItemCaseSensitive(config, "Cmd"), "Cmd", add);
	if (command == argc_out)
		die("%s: no command: config.json has no Entrypoint or Cmd, so give one", dir);
	check_command(argv_out[command], workdir);
	set_personality();
	if (debug)
		print_command();
	/* nothing of ours, nor what our caller leaked to us, reaches the sandbox */
	close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	execvp(argv_out[0], (char **)argv_out);
	die("exec %s:", argv_out[0]);
}
