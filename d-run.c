/* SPDX-License-Identifier: MIT */
/* d-run: run a command in DIR/rootfs under bubblewrap, as DIR/config.json says: the image's
 * config (User, Env, WorkingDir, Hostname, Volumes, Entrypoint, Cmd) and the user's net and rw.
 * It builds bwrap's argv, then execs it: allocations and fds are left to that. */
#define _GNU_SOURCE
#include <linux/openat2.h>
#include <seccomp.h>
#include "common.h"
#define MAX_FILE (1 << 20)
#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

/* the options: -v and -e as config.json would hold them, -u, --net and --rw */
static cJSON *opts;
static const char *opt_user;
static int net, rw;
static const char **args, *dir, *conf_name;
static int nargs, dir_fd, root_fd, nbinds;
static struct bind {
	const char *dest, *host;
} * binds; /* the volumes */
/* Where bwrap mounts its own /proc and /dev, once resolved. They are full of magic links that
 * bwrap 0.8 follows while it sets up later mounts and the working directory: /proc/self/cwd is
 * its own set-up root, which holds the host's root as oldroot, and /dev/fd is /proc/self/fd. */
static const char *magic_mounts[2];
static const char usage[] =
        "usage: d-run [-h] [-v VOLUME]... [-e KEY[=VALUE]]... [-u USER] [-r|--fakeroot] "
        "[-n|--net] [-w|--rw] DIR [CMD...]";

/* openat2(2) with resolve flags such as RESOLVE_IN_ROOT; O_CLOEXEC is added. */
static int open_at(int dirfd, const char *path, int flags, unsigned long long resolve)
{
	struct open_how how = { .flags = flags | O_CLOEXEC, .resolve = resolve };
	return syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* Appends its arguments, up to a NULL, to bwrap's argv. */
static __attribute__((sentinel)) void add(const char *arg, ...)
{
	va_list ap;
	va_start(ap, arg);
	for (; arg; arg = va_arg(ap, const char *)) {
		args = xrealloc(args, (nargs + 2) * sizeof(*args));
		args[nargs++] = arg;
	}
	args[nargs] = NULL;
	va_end(ap);
}

/* An entry KEY=VALUE; a KEY alone takes the caller's value, for -e only (the caller is set) */
static void add_env(const char *entry, int caller)
{
	char *value = xasprintf("%s", entry), *key = strsep(&value, "=");
	if (!value && caller)
		value = getenv(key);
	if (value)
		add("--setenv", key, value, NULL);
}

/* the path of an open file: a magic link's target has no symlink left to follow */
static char *fd_path(int fd)
{
	char *path = realpath(xasprintf("/proc/self/fd/%d", fd), NULL);
	if (!path)
		err(1, "/proc/self/fd/%d", fd);
	return path;
}

/* 1 if path is top or below it */
static int is_under(const char *path, const char *top)
{
	size_t n = strlen(top);
	return !strncmp(path, top, n) && (!strcmp(top, "/") || path[n] == '/' || !path[n]);
}

/* Finds path inside root and creates what is missing of it (the last part as a file when file
 * is set), never leaving root. Returns it with every symlink resolved: bwrap follows symlinks
 * where it mounts, onto the host (GHSA-pxhw-h44j-8pfx), so it must be given none. A path that
 * resolves into /proc or /dev is refused before anything is created below them. */
static const char *mount_point(int root, const char *path, int file)
{
	char *p = xasprintf("%s", path), *end = p, *name, c, *top = fd_path(root);
	const char *inside = "/";
	int fd = root;
	while (*(name = end += strspn(end, "/"))) {
		end += strcspn(end, "/");
		c = *end;
		*end = '\0';
		/* made in its parent, found inside root, if missing; what is there stays, and is
		 * not opened: mknodat() follows no symlink and fails on any name that exists */
		if (!c && file)
			mknodat(fd, name, S_IFREG | 0644, 0);
		else
			mkdirat(fd, name, 0755);
		/* in DIR/volumes, a link a run left (x -> /) must not make DIR a volume */
		if ((fd = open_at(root, p, O_PATH,
		                  root == dir_fd ? RESOLVE_NO_SYMLINKS : IN_ROOT)) < 0)
			err(1, "%s: %s", path, p);
		inside = fd_path(fd) + strlen(top);
		inside = *inside ? inside : "/";
		for (int i = 0; i < 2; i++)
			if (magic_mounts[i] && is_under(inside, magic_mounts[i]))
				errx(1, "%s: inside %s, where bwrap mounts its own file system",
				     path, magic_mounts[i]);
		*end = c;
	}
	return inside;
}

/* The file the sandbox will see at path, never through a symlink a run put in a volume */
static int open_in_sandbox(const char *path, int flags)
{
	for (int i = nbinds - 1; i >= 0; i--) {
		if (!is_under(path, binds[i].dest))
			continue;
		path = xasprintf("%s%s", binds[i].host, path + strlen(binds[i].dest));
		return open_at(AT_FDCWD, path, flags, RESOLVE_NO_SYMLINKS);
	}
	return open_at(root_fd, path, flags, IN_ROOT);
}

/* For a run as uid 0, which is the only uid mapped: the calls that change owners or identities
 * succeed and do nothing, as in charliecloud and Nix, so that dpkg and apt work. An i386 image
 * on an x86_64 kernel calls through the 32-bit table, hence its names ending in 32. */
static void add_filter(void)
{
	/* called once: strtok() may cut it up */
	static char faked[] =
	        "chown fchown lchown fchownat chown32 fchown32 lchown32 setuid setuid32 setgid "
	        "setgid32 setreuid setreuid32 setregid setregid32 setresuid setresuid32 "
	        "setresgid setresgid32 setfsuid setfsuid32 setfsgid setfsgid32 setgroups "
	        "setgroups32 capset";
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	/* an architecture the filter does not know is not filtered */
	int fd, r = !ctx || seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ALLOW);
	/* for an i386 image on x86_64; elsewhere useless, or refused (EEXIST) where native */
	seccomp_arch_add(ctx, SCMP_ARCH_X86);
	for (char *name = strtok(faked, " "); !r && name; name = strtok(NULL, " "))
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(0), seccomp_syscall_resolve_name(name), 0);
	if (r || (fd = memfd_create("d-run filter", 0)) < 0 || seccomp_export_bpf(ctx, fd) ||
	    lseek(fd, 0, SEEK_SET))
		errx(1, "cannot make the seccomp filter");
	add("--seccomp", xasprintf("%d", fd), NULL);
}

/* User is name, uid, name:gid or uid:gid, looked up in the sandbox's passwd, never the host's.
 * A gid is a number (docker also looks names up in /etc/group); bwrap refuses a uid or gid
 * that is not a number: a name that was not found. */
static const char *add_user(const char *spec)
{
	char *gid = xasprintf("%s", spec), *user = strsep(&gid, ":"), *f[7], *line;
	/* O_NONBLOCK: a FIFO must not hang us */
	char *text = read_fd(open_in_sandbox("/etc/passwd", O_RDONLY | O_NONBLOCK), "/etc/passwd",
	                     MAX_FILE);
	const char *uid = user, *home = "/";
	/* an empty line, or one of fewer than 7 fields, leaves f[6] NULL */
	while ((line = strsep(&text, "\n"))) {
		for (int i = 0; i < 7; i++)
			f[i] = strsep(&line, ":");
		/* a number is a uid, as in docker: never a name, which an image may make "1000" */
		if (f[6] && !strcmp(user[strspn(user, "0123456789")] ? f[0] : f[2], user)) {
			uid = f[2];
			gid = gid ? gid : f[3];
			home = f[5];
			break;
		}
	}
	add("--uid", uid, "--gid", gid ? gid : "0", NULL);
	if (!strcmp(uid, "0"))
		add_filter();
	return home;
}

/* /path keeps its data in DIR/volumes/path; host:/path[:ro|:rw] binds a host path, a device
 * under /dev. No volume may hold another: bwrap would follow symlinks a run put in the outer. */
static void add_volume(const char *spec)
{
	char *s = xasprintf("%s", spec), *real;
	char *host = strchr(s, ':') ? strsep(&s, ":") : NULL, *dest = strsep(&s, ":");
	const char *how = s && !strcmp(s, "ro") ? "--ro-bind" : "--bind";
	struct stat st;
	if (*dest != '/' || !dest[1] || strstr(xasprintf("%s/", dest), "/../") ||
	    (host && !*host) || (s && strcmp(s, "ro") && strcmp(s, "rw")))
		errx(1, "volume %s: want /path or host:/path[:ro|:rw], without ..", spec);
	if (!host)
		host = xasprintf("%s%s", dir,
		                 mount_point(dir_fd, xasprintf("volumes/%s", dest), 0));
	if (!(real = realpath(host, NULL)) || stat(real, &st))
		err(1, "volume %s: %s", spec, host);
	dest = (char *)mount_point(root_fd, dest, !S_ISDIR(st.st_mode));
	if (!strcmp(dest, "/"))
		errx(1, "volume %s: resolves to /", spec);
	/* in the sandbox, and on the host: a run could put a symlink in the outer one */
	for (int i = 0; i < nbinds; i++)
		if (is_under(dest, binds[i].dest) || is_under(binds[i].dest, dest) ||
		    is_under(real, binds[i].host) || is_under(binds[i].host, real))
			errx(1, "volume %s: %s and volume %s nest", spec, dest, binds[i].dest);
	binds = xrealloc(binds, (nbinds + 1) * sizeof(*binds));
	binds[nbinds++] = (struct bind){ .dest = dest, .host = real };
	add(strncmp(real, "/dev/", 5) ? how : "--dev-bind", real, dest, NULL);
}

/* words of the command, or Env entries: 1 the image's, 2 the options' */
static void add_strings(const cJSON *config, const char *key, int env)
{
	const cJSON *s;
	cJSON_ArrayForEach(s,
	                   json_get(config, key, cJSON_IsArray, "a list of strings", conf_name)) {
		if (!cJSON_IsString(s))
			errx(1, "%s: \"%s\" is not a list of strings", conf_name, key);
		if (env)
			add_env(s->valuestring, env == 2);
		else
			add(s->valuestring, NULL);
	}
}

static void parse_options(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },      { "volume", required_argument, NULL, 'v' },
		{ "env", required_argument, NULL, 'e' }, { "user", required_argument, NULL, 'u' },
		{ "net", no_argument, NULL, 'n' },       { "rw", no_argument, NULL, 'w' },
		{ "fakeroot", no_argument, NULL, 'r' },  { NULL, 0, NULL, 0 }
	};
	cJSON *env, *volumes;
	int c;
	opts = cJSON_CreateObject();
	env = cJSON_AddArrayToObject(opts, "Env");
	volumes = cJSON_AddObjectToObject(opts, "Volumes");
	while ((c = getopt_long(argc, argv, "+hv:e:u:nwr", options, NULL)) != -1)
		switch (c) {
		case 'h': exit(puts(usage) == EOF);
		case 'v': cJSON_AddItemToObject(volumes, optarg, cJSON_CreateObject()); break;
		case 'e': cJSON_AddItemToArray(env, cJSON_CreateString(optarg)); break;
		case 'u': opt_user = optarg; break;
		case 'r': opt_user = "0"; break; /* xi/d-utils' fakeroot, and the default */
		case 'n': net = 1; break;
		case 'w': rw = 1; break;
		default: errx(2, "%s", usage);
		}
	if (optind >= argc)
		errx(2, "%s", usage);
}

/* DIR, its rootfs and its config.json */
static cJSON *read_config(const char *arg)
{
	if ((dir_fd = open(arg, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    !(dir = realpath(arg, NULL)))
		err(1, "%s", arg);
	if ((root_fd = openat(dir_fd, "rootfs", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		err(1, "%s/rootfs", dir);
	conf_name = xasprintf("%s/config.json", dir);
	/* missing, it is not a JSON object either */
	return parse_object(
	        read_fd(openat(dir_fd, "config.json", O_RDONLY | O_CLOEXEC), conf_name, MAX_FILE),
	        conf_name);
}

/* the sandbox: the rootfs, a new /proc, /dev and /tmp, the network if asked, the volumes */
static void add_mounts(const cJSON *config)
{
	const char *hostname = json_string(config, "Hostname", conf_name);
	const cJSON *v;
	add("bwrap", "--unshare-all", "--unshare-user", "--die-with-parent",
	    rw ? "--bind" : "--ro-bind", xasprintf("%s/rootfs", dir), "/", NULL);
	magic_mounts[0] = mount_point(root_fd, "/proc", 0);
	magic_mounts[1] = mount_point(root_fd, "/dev", 0);
	add("--proc", magic_mounts[0], "--dev", magic_mounts[1], NULL);
	add("--perms", "1777", "--tmpfs", mount_point(root_fd, "/tmp", 0), NULL);
	/* the host's name service files, as volumes: what they point to if symlinks */
	if (net) {
		add("--share-net", NULL);
		add_volume("/etc/resolv.conf:/etc/resolv.conf:ro");
		add_volume("/etc/hosts:/etc/hosts:ro");
	}
	if (hostname && *hostname)
		add("--hostname", hostname, NULL);
	/* the image's volumes, then the options' */
	cJSON_ArrayForEach(v, json_get(config, "Volumes", cJSON_IsObject, "an object", conf_name))
		add_volume(v->string);
	cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(opts, "Volumes"))
		add_volume(v->string);
}

/* the user, working directory, environment and command, as the sandbox shows them */
static void add_process(const cJSON *config, int argc, char **argv)
{
	const char *user = opt_user ? opt_user : json_string(config, "User", conf_name);
	const char *workdir = json_string(config, "WorkingDir", conf_name), *home;
	int command;
	home = add_user(user && *user ? user : "0");
	workdir = mount_point(root_fd, workdir && *workdir ? workdir : "/", 0);
	/* bwrap changes directory once the volumes are mounted, following symlinks */
	if (open_in_sandbox(workdir, O_PATH | O_DIRECTORY) < 0)
		err(1, "WorkingDir %s: not through a symlink in a volume (/proc?)", workdir);
	add("--chdir", workdir, "--clearenv", NULL);
	add_env("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 0);
	add_env(xasprintf("HOME=%s", home), 0);
	if (isatty(0))
		add_env("TERM", 1);
	add_strings(config, "Env", 1);
	add_strings(opts, "Env", 2);
	add("--", NULL);
	command = nargs;
	add_strings(config, "Entrypoint", 0);
	if (optind == argc)
		add_strings(config, "Cmd", 0);
	while (optind < argc)
		add(argv[optind++], NULL);
	if (command == nargs)
		errx(1, "%s: no command: config.json has no Entrypoint or Cmd, so name one", dir);
}

int main(int argc, char **argv)
{
	cJSON *config;
	/* 0, 1 and 2 open: else bwrap's fd of the host's /proc could be one, which its pid 1,
	 * in the sandbox, keeps (runc CVE-2024-21626) */
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
			err(1, "/dev/null");
	/* nothing our caller leaked to us reaches the sandbox; our own fds are O_CLOEXEC */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC))
		err(1, "close_range");
	parse_options(argc, argv);
	config = read_config(argv[optind++]);
	net |= cJSON_IsTrue(json_get(config, "net", cJSON_IsBool, "true or false", conf_name));
	rw |= cJSON_IsTrue(json_get(config, "rw", cJSON_IsBool, "true or false", conf_name));
	add_mounts(config);
	add_process(config, argc, argv);
	execvp("bwrap", (char **)args);
	err(127, "bwrap");
}
