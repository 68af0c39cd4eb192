/* SPDX-License-Identifier: MIT */
/* d-run: run a command in DIR/rootfs under bubblewrap, as DIR/config.json says: the image's
 * config (User, Env, WorkingDir, Hostname, Volumes, Entrypoint, Cmd) and the user's net and rw. */
#define _GNU_SOURCE
#include <limits.h>
#include <sys/personality.h>
#include "common.h"
#define MAX_FILE (1 << 20)
#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

/* d-run execs bwrap at once and closes every fd then: it leaves fds open for that. */
static const char **args, *dir, *conf_name,
	*path_env = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
static int nargs, dir_fd, root_fd, nbinds;
static struct {
	const char *dest, *host;
} * binds; /* the volumes */
static const char usage[] =
	"usage: d-run [-h] [-v VOLUME]... [-e KEY=VALUE]... [-u USER] [-n|--net] [-w|--rw] "
	"[--debug] DIR [CMD...]";

/* Appends n arguments to bwrap's argv. */
static void add(int n, ...)
{
	va_list ap;
	va_start(ap, n);
	args = xrealloc(args, (nargs + n + 1) * sizeof(*args));
	while (n--)
		args[nargs++] = va_arg(ap, const char *);
	args[nargs] = NULL;
	va_end(ap);
}

/* An entry KEY=VALUE; a KEY alone takes the caller's value, for -e only (the caller is set) */
static void add_env(const char *entry, int caller)
{
	char *key = xasprintf("%s", entry), *value = strchr(key, '=');
	if (!value && !(caller && (value = getenv(key))))
		return;
	if (*value == '=')
		*value++ = '\0';
	if (!strcmp(key, "PATH"))
		path_env = value;
	add(3, "--setenv", key, value);
}

/* a magic link's target has no symlink left to follow */
static char *fd_path(int fd)
{
	char *path = xrealloc(NULL, PATH_MAX), *link = xasprintf("/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, PATH_MAX - 1);
	if (n < 0)
		err(1, "%s", link);
	path[n] = '\0';
	return path;
}

/* Finds path inside root and creates what is missing of it (the last part as a file when file
 * is set), never leaving root. Returns it with every symlink resolved: bwrap follows symlinks
 * where it mounts, onto the host (GHSA-pxhw-h44j-8pfx), so it must be given none. */
static const char *mount_point(int root, const char *path, int file)
{
	char *p = xasprintf("%s", path), *end = p, *name, c, *host, *top = fd_path(root);
	int fd = root, parent;
	while (*(name = end += strspn(end, "/"))) {
		end += strcspn(end, "/");
		c = *end;
		*end = '\0';
		parent = fd;
		if ((fd = open_at(root, p, O_PATH, IN_ROOT)) < 0 && errno == ENOENT) {
			if (!c && file)
				close(openat(parent, name,
					     O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
					     0644));
			else
				mkdirat(parent, name, 0755);
			fd = open_at(root, p, O_PATH, IN_ROOT);
		}
		if (fd < 0)
			err(1, "%s: %s", top, p);
		*end = c;
	}
	host = fd_path(fd);
	return host[strlen(top)] ? host + strlen(top) : "/";
}

/* The volume bound over path, or -1 */
static int bind_over(const char *path)
{
	for (int i = nbinds - 1; i >= 0; i--)
		if (!strncmp(path, binds[i].dest, strlen(binds[i].dest)) &&
		    strchr("/", path[strlen(binds[i].dest)]))
			return i;
	return -1;
}

/* The file the sandbox will see at path; to read, never through a symlink a run put in a volume */
static int open_in_sandbox(const char *path, int flags)
{
	int i = bind_over(path);
	return i < 0 ? open_at(root_fd, path, flags, IN_ROOT)
		     : open_at(AT_FDCWD,
			       xasprintf("%s%s", binds[i].host, path + strlen(binds[i].dest)),
			       flags, flags & O_PATH ? 0 : RESOLVE_NO_SYMLINKS);
}

/* The passwd or group line whose name, or number, is key; fields are split in place. */
static int find_entry(char *text, const char *key, char **field, int nfields)
{
	char *line, *save = NULL;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		for (int i = 0; i < nfields; i++)
			field[i] = strsep(&line, ":");
		if (field[nfields - 1] && (!strcmp(field[0], key) || !strcmp(field[2], key)))
			return 1;
	}
	return 0;
}

/* User is name, uid, name:group or uid:gid, looked up in the sandbox's files, never the host's. */
static void add_user(const char *spec, const char **home)
{
	char *user = xasprintf("%s", spec), *group = strchr(user, ':'), *f[7], *text, *end;
	const char *ids[2] = { user, "0" };
	if (group)
		*group++ = '\0';
	text = read_fd(open_in_sandbox("/etc/passwd", O_RDONLY | O_NONBLOCK), "/etc/passwd",
		       MAX_FILE);
	if (text && find_entry(text, user, f, 7))
		ids[0] = f[2], ids[1] = f[3], *home = f[5];
	text = group ? read_fd(open_in_sandbox("/etc/group", O_RDONLY | O_NONBLOCK), "/etc/group",
			       MAX_FILE)
		     : NULL;
	if (group)
		ids[1] = text && find_entry(text, group, f, 4) ? f[2] : group;
	for (int i = 0; i < 2; i++)
		if (!*ids[i] || strtoul(ids[i], &end, 10) >= 0xffffffffUL || *end)
			errx(1, "%s: no such %s in the image's /etc/%s", ids[i],
			     i ? "group" : "user", i ? "group" : "passwd");
	add(4, "--uid", ids[0], "--gid", ids[1]);
}

/* /path keeps its data in DIR/volumes/path; host:/path[:ro|:rw] binds a host path, a device under
 * /dev. */
static void add_volume(const char *spec)
{
	char *s = xasprintf("%s", spec), *host = strsep(&s, ":"), *dest = strsep(&s, ":"),
	     *mode = s, *real;
	struct stat st;
	if (!dest)
		dest = host, host = NULL;
	if (*dest != '/' || !dest[1] || strstr(xasprintf("%s/", dest), "/../") ||
	    (host && !*host) || (mode && strcmp(mode, "ro") && strcmp(mode, "rw")))
		errx(1,
		     "volume %s: want /path, host:/path, host:/path:ro or host:/path:rw, without "
		     "..",
		     spec);
	/* bwrap would follow, in the first, symlinks that a run put there */
	if (bind_over(dest) >= 0)
		errx(1, "volume %s: inside volume %s", spec, binds[bind_over(dest)].dest);
	if (!host)
		host = xasprintf("%s%s", dir,
				 mount_point(dir_fd, xasprintf("volumes/%s", dest), 0));
	if (!(real = realpath(host, NULL)) || stat(real, &st))
		err(1, "volume %s: %s", spec, host);
	binds = xrealloc(binds, (nbinds + 1) * sizeof(*binds));
	binds[nbinds].host = real;
	binds[nbinds].dest = mount_point(root_fd, dest, !S_ISDIR(st.st_mode));
	add(3,
	    !strncmp(real, "/dev/", 5)	  ? "--dev-bind"
	    : mode && !strcmp(mode, "ro") ? "--ro-bind"
					  : "--bind",
	    real, binds[nbinds++].dest);
}

/* words of the command, or Env entries: 1 the image's, 2 the options' */
static void add_strings(const cJSON *config, const char *key, int env)
{
	const cJSON *s;
	cJSON_ArrayForEach(s, json_get(config, key, cJSON_IsArray, "a list of strings", conf_name))
	{
		if (!cJSON_IsString(s))
			errx(1, "%s: \"%s\" is not a list of strings", conf_name, key);
		env ? add_env(s->valuestring, env == 2) : add(1, s->valuestring);
	}
}

/* bwrap exits 1 when exec fails; a shell says 127 for a command not found, 126 for one that cannot
 * run. */
static void check_command(const char *cmd, const char *workdir)
{
	char *dirs = xasprintf("%s", strchr(cmd, '/') ? *cmd == '/' ? "" : workdir : path_env), *d;
	int fd, denied = 0;
	struct stat st;
	while ((d = strsep(&dirs, ":"))) {
		if ((fd = open_in_sandbox(xasprintf("%s/%s", d, cmd), O_PATH)) < 0 ||
		    fstat(fd, &st))
			continue;
		if (S_ISREG(st.st_mode) && st.st_mode & 0111)
			return;
		denied = 1;
	}
	warnx("%s: %s", cmd, denied ? "permission denied" : "command not found");
	exit(denied ? 126 : 127);
}

/* --debug: the bwrap command line, quoted for a shell */
static void print_command(void)
{
	for (int i = 0; i < nargs; i++) {
		const char *s = args[i],
			   *q = *s && !s[strcspn(s, " \t\n'\"\\$`*?[]{}()<>|&;#~!")] ? "" : "'";
		for (fprintf(stderr, "%s%s", i ? " " : "", q); *s; s++)
			*s == '\'' ? fputs("'\\''", stderr) : fputc(*s, stderr);
		fprintf(stderr, "%s%s", q, i + 1 < nargs ? "" : "\n");
	}
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "volume", required_argument, NULL, 'v' },
		{ "env", required_argument, NULL, 'e' },
		{ "user", required_argument, NULL, 'u' },
		{ "net", no_argument, NULL, 'n' },
		{ "rw", no_argument, NULL, 'w' },
		{ "fakeroot", no_argument, NULL, 'r' },
		{ "debug", no_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	cJSON *config, *opts = cJSON_CreateObject(), *env = cJSON_AddArrayToObject(opts, "Env");
	cJSON *vols = cJSON_AddObjectToObject(opts, "Volumes"), *v;
	const char *user = NULL, *home = "/", *workdir, *hostname, *resolv, *hosts;
	int net = 0, rw = 0, debug = 0, command, c;
	char *text;
	while ((c = getopt_long(argc, argv, "+hv:e:u:nwr", options, NULL)) != -1)
		switch (c) {
		case 'h': return puts(usage) == EOF;
		case 'v': cJSON_AddItemToObject(vols, optarg, cJSON_CreateObject()); break;
		case 'e': cJSON_AddItemToArray(env, cJSON_CreateString(optarg)); break;
		case 'u': user = optarg; break;
		case 'r':
			user = "0";
			break; /* xi/d-utils' fakeroot; root is also the default, as in docker */
		case 'n': net = 1; break;
		case 'w': rw = 1; break;
		case 'd': debug = 1; break;
		default: errx(2, "%s", usage);
		}
	if (optind >= argc)
		errx(2, "%s", usage);
	dir = argv[optind++];
	if ((dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    !(dir = realpath(dir, NULL)))
		err(1, "%s", argv[optind - 1]);
	if ((root_fd = openat(dir_fd, "rootfs", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		err(1, "%s/rootfs", dir);
	if (!(text = read_fd(openat(dir_fd, "config.json", O_RDONLY | O_CLOEXEC), "config.json",
			     MAX_FILE)))
		errx(1, "%s/config.json: missing", dir);
	config = parse_object(text, conf_name = xasprintf("%s/config.json", dir));
	net |= cJSON_IsTrue(json_get(config, "net", cJSON_IsBool, "true or false", conf_name));
	rw |= cJSON_IsTrue(json_get(config, "rw", cJSON_IsBool, "true or false", conf_name));
	user = user ? user : json_string(config, "User", conf_name);
	workdir = json_string(config, "WorkingDir", conf_name);
	workdir = workdir && *workdir ? workdir : "/";
	add(13, "bwrap", "--unshare-all", "--unshare-user", "--die-with-parent",
	    rw ? "--bind" : "--ro-bind", xasprintf("%s/rootfs", dir), "/", "--proc",
	    mount_point(root_fd, "/proc", 0), "--dev", mount_point(root_fd, "/dev", 0), "--tmpfs",
	    mount_point(root_fd, "/tmp", 0));
	/* the host's resolv.conf is often a symlink: bind what it points to */
	if (net && (!(resolv = realpath("/etc/resolv.conf", NULL)) ||
		    !(hosts = realpath("/etc/hosts", NULL))))
		err(1, "/etc/resolv.conf or /etc/hosts");
	if (net)
		add(7, "--share-net", "--ro-bind", resolv,
		    mount_point(root_fd, "/etc/resolv.conf", 1), "--ro-bind", hosts,
		    mount_point(root_fd, "/etc/hosts", 1));
	if ((hostname = json_string(config, "Hostname", conf_name)) && *hostname)
		add(2, "--hostname", hostname);
	/* the image's volumes, then the options'; then the user, as they show it */
	for (int i = 0; i < 2; i++)
		cJSON_ArrayForEach(v, json_get(i ? opts : config, "Volumes", cJSON_IsObject,
					       "an object", conf_name)) add_volume(v->string);
	add_user(user && *user ? user : "0", &home);
	add(3, "--chdir", mount_point(root_fd, workdir, 0), "--clearenv");
	add_env(xasprintf("PATH=%s", path_env), 0);
	add_env(xasprintf("HOME=%s", home), 0);
	if (isatty(0) && getenv("TERM"))
		add_env(xasprintf("TERM=%s", getenv("TERM")), 0);
	add_strings(config, "Env", 1);
	add_strings(opts, "Env", 2);
	json_get(config, "Cmd", cJSON_IsArray, "a list of strings", conf_name);
	add(1, "--");
	command = nargs;
	add_strings(config, "Entrypoint", 0);
	if (optind == argc)
		add_strings(config, "Cmd", 0);
	while (optind < argc)
		add(1, argv[optind++]);
	if (command == nargs)
		errx(1, "%s: no command: config.json has no Entrypoint or Cmd, so name one", dir);
	check_command(args[command], workdir);
	/* a 32-bit image (linux/386, linux/arm) runs with the 32-bit personality, as setarch gives
	 */
	text = read_fd(openat(dir_fd, "image.txt", O_RDONLY | O_CLOEXEC), "image.txt", MAX_FILE);
	if (text && (strstr(text, "\nlinux/386\n") || strstr(text, "\nlinux/arm/")) &&
	    personality(PER_LINUX32) < 0)
		err(1, "personality");
	if (debug)
		print_command();
	/* nothing of ours, nor anything our caller leaked to us, reaches the sandbox */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC))
		err(1, "close_range");
	/* access() finds bwrap in PATH faster than the failing execve() calls of execvp() */
	for (char *dirs = xasprintf("%s", getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin"), *d;
	     (d = strsep(&dirs, ":"));)
		if (!access(xasprintf("%s/bwrap", d), X_OK))
			execv(xasprintf("%s/bwrap", d), (char **)args);
	err(127, "bwrap");
}
