/* SPDX-License-Identifier: MIT */
/* d-pull: fetch an image from a Docker/OCI registry into DIR/rootfs and DIR/config.json.
 * Blobs stream into a content-addressed cache and get their digest as name once verified.
 * Each layer is unpacked by a child chrooted into the rootfs (in a user namespace when
 * unprivileged), so no name, link or whiteout in a layer can reach the host. */
#define _GNU_SOURCE
#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <dirent.h>
#include <ftw.h>
#include <libgen.h>
#include <linux/capability.h>
#include <openssl/evp.h>
#include <regex.h>
#include <sched.h>
#include <search.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include "common.h"
#define MAX_BODY (4 << 20) /* manifests, configs, tokens */
#define MAX_TRIES 4
#define DIGEST_LEN 71 /* "sha256:" and 64 hex digits */
/* DIR, what it holds, and the directories remove_tree() goes through: never a symlink */
#define OPEN_DIR (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

/* One GET, into memory or, for a layer, into an unnamed file in the cache. */
struct transfer {
	char *url, *body;
	char digest[DIGEST_LEN + 1]; /* what the body must hash to, or "" */
	int layer, tries;
	int tee[2]; /* a layer's: what its extractor reads (its cached file, or a pipe), our end */
	size_t len;
	FILE *out;
	curl_off_t bytes, size; /* size: of a layer, as the manifest says */
	long status;
	EVP_MD_CTX *md;
};
static struct {
	char *registry, *host, *repo, *tag, *digest;
} ref;
static const char *image, *want, *out_dir; /* image: "registry/repository", for messages */
/* DIR is reached through fds once made: whoever else can write in its parent cannot move it,
 * or what it holds, under us. out_name is its name in its parent. */
static int parent_fd, out_fd, rootfs_fd;
static char *out_name, *base_url, *auth, *credentials, *cache_path; /* auth: a header */
/* notes: a memfd, the extractor's stderr, which we show once it is done */
static int cache_fd, quiet, rootless, nlayers, notes;
static struct transfer *layers;
/* In the extractor, a process for each layer: the names the layer wrote, which its whiteouts
 * spare; the directories it makes opaque, as "dir/" ("" for the root); the last one cleared. */
static void *written, *opaque;
static const char *cleared;
static pid_t extractor;
static const char usage[] = "usage: d-pull [-h] [-q] [--platform OS/ARCH[/VARIANT]] "
                            "[registry/]name[:tag|@digest] [DIR]";

static int matches(const char *pattern, const char *s, regmatch_t *m, size_t n)
{
	regex_t re;
	return !regcomp(&re, pattern, REG_EXTENDED) && !regexec(&re, s, n, m, 0);
}

static int valid_digest(const char *d)
{
	return d && matches("^sha256:[0-9a-f]{64}$", d, NULL, 0);
}

/* the text of a group that matched, or NULL */
static char *group(const char *s, regmatch_t m)
{
	return m.rm_so < 0 ? NULL : strndup(s + m.rm_so, m.rm_eo - m.rm_so);
}

/* distribution's reference grammar: groups 2 registry, 6 repository, 11 tag, 13 digest. As in
 * docker, the first component names a registry only if it looks like a host. */
static void parse_ref(const char *arg)
{
	static const char grammar[] =
	        "^(((localhost|[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+|[A-Za-z0-9.-]+:[0-9]+|"
	        "\\[[0-9a-fA-F:]+\\])(:[0-9]+)?)/)?"
	        "([a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*)"
	        "(:([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(@(sha256:[0-9a-f]{64}))?$";
	regmatch_t m[14];
	if (!matches(grammar, arg, m, 14))
		errx(1, "%s: invalid image name: want [registry/]name[:tag][@sha256:...]", arg);
	ref.registry = group(arg, m[2]);
	ref.repo = group(arg, m[6]);
	ref.tag = group(arg, m[11]);
	ref.digest = group(arg, m[13]);
	if (!ref.tag && !ref.digest)
		ref.tag = "latest";
	if (!ref.registry || matches("^(index|registry-1)\\.docker\\.io$", ref.registry, NULL, 0))
		ref.registry = "docker.io";
	ref.host = strcmp(ref.registry, "docker.io") ? ref.registry : "registry-1.docker.io";
	if (!strcmp(ref.registry, "docker.io") && !strchr(ref.repo, '/'))
		ref.repo = xasprintf("library/%s", ref.repo);
	image = xasprintf("%s/%s", ref.registry, ref.repo);
}

/* --platform, else GOOS/GOARCH as xi/d-utils reads them, else the host's */
static void parse_platform(const char *arg)
{
	static const char *arches[][2] = {
		{ "x86_64", "amd64" }, { "aarch64", "arm64" }, { "i686", "386" }, { "armv", "arm" }
	};
	static struct utsname u;
	const char *arch = getenv("GOARCH"), *os = getenv("GOOS");
	uname(&u);
	for (size_t i = 0; !arch && i < 4; i++)
		if (!strncmp(u.machine, arches[i][0], strlen(arches[i][0])))
			arch = arches[i][1];
	want = arg ? arg : xasprintf("%s/%s", os ? os : "linux", arch ? arch : u.machine);
	if (!matches("^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$", want, NULL, 0))
		errx(2, "platform %s: want OS/ARCH[/VARIANT]", want);
}

static size_t on_data(char *data, size_t size, size_t n, void *userdata)
{
	struct transfer *t = userdata;
	t->bytes += n;
	if (t->bytes > (t->layer ? t->size : MAX_BODY) || !EVP_DigestUpdate(t->md, data, n))
		return 0; /* curl fails with CURLE_WRITE_ERROR */
	/* The extractor unpacks a layer as it comes, into DIR alone, and the pull fails if the
	 * digest does not match. EPIPE: the extractor ended (done, or failed: it says why once the
	 * layer is verified; curl ignores SIGPIPE while it runs). A write that a signal interrupts,
	 * even a stop (Ctrl-Z, then fg), returns what it wrote so far: the rest must follow, or the
	 * extractor would unpack a stream with a hole while the digest of the whole passes. */
	for (ssize_t w = 0, off = 0; t->layer && off < (ssize_t)n && w >= 0; off += w)
		if ((w = write(t->tee[1], data + off, n - off)) < 0 && errno != EPIPE)
			return 0;
	return fwrite(data, size, n, t->out);
}

/* (Re)starts a transfer. A try after the first goes on where the last one stopped, with a Range
 * request, and the digest is over all of it. (Manifests, which registries serve whole, are too
 * small to stop in the middle; if one did, curl would say the server does not support ranges.) A
 * NULL handle, out of memory, makes curl_easy_perform() fail with CURLE_BAD_FUNCTION_ARGUMENT. */
static CURL *start(struct transfer *t)
{
	static const char accept[] = "Accept: application/vnd.oci.image.index.v1+json, "
	                             "application/vnd.docker.distribution.manifest.list.v2+json, "
	                             "application/vnd.oci.image.manifest.v1+json, "
	                             "application/vnd.docker.distribution.manifest.v2+json";
	const char *ca = getenv("CURL_CA_BUNDLE");
	CURL *h = curl_easy_init();
	/* kept for the transfer's life, and not freed after: a few per pull */
	struct curl_slist *headers = curl_slist_append(NULL, accept);
	curl_easy_setopt(h, CURLOPT_RESUME_FROM_LARGE, t->bytes);
	if (auth)
		headers = curl_slist_append(headers, auth);
	curl_easy_setopt(h, CURLOPT_URL, t->url);
	/* Blobs are often redirected to a CDN: curl sends Authorization only to the first host. */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	/* an error answer's body is not the blob's: it must not count, nor be hashed */
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
	if (ca || (ca = getenv("SSL_CERT_FILE")))
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
	return h;
}

static void authenticate(const char *challenge);

/* 1 when the transfer must start again: after a failure that may pass, or with a new token after a
 * 401 from the registry itself. Credentials go to no one else: a blob redirected to another origin
 * gets none. Any other failure ends the pull, saying what a user can do about it. */
static int must_retry(struct transfer *t, CURL *h, CURLcode rc)
{
	struct curl_header *challenge;
	const char *advice = "unexpected answer";
	curl_off_t wait = 0;
	char *where;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t->status);
	curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &where);
	curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &wait);
	/* A failure that may pass: a connection that broke, a server error or a rate limit, unless
	 * it asks for a wait over 10 s. A connection refused at first is a wrong address, or no
	 * registry there: that fails at once. */
	int passing = rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_GOT_NOTHING ||
	              rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
	              rc == CURLE_PARTIAL_FILE || (rc == CURLE_COULDNT_CONNECT && t->tries) ||
	              ((t->status >= 500 || t->status == 429) && wait <= 10);
	t->tries++;
	if (t->tries < MAX_TRIES && passing) {
		sleep(wait > 0 ? wait : 1 << t->tries); /* a date in the past is negative */
		return 1;
	}
	if (rc != CURLE_OK && rc != CURLE_HTTP_RETURNED_ERROR)
		errx(1, "%s: %s", t->url, curl_easy_strerror(rc));
	if (t->status == 401 && t->tries < MAX_TRIES &&
	    !strncmp(where, base_url, strlen(base_url)) &&
	    !curl_easy_header(h, "WWW-Authenticate", 0, CURLH_HEADER, -1, &challenge)) {
		authenticate(challenge->value);
		return 1;
	}
	/* 206: the rest of a layer, after a Range request */
	if (t->status == 200 || t->status == 206)
		return 0;
	/* Docker Hub says 401 for a repository that does not exist */
	if (t->status == 401 || t->status == 403 || t->status == 404)
		advice = "access denied or not found: check the name and the tag, or log in";
	else if (t->status == 429)
		advice = xasprintf("rate limit: wait %ld s, or log in (docker login)", (long)wait);
	errx(1, "%s: HTTP %ld from %s: %s", image, t->status, t->url, advice);
}

/* GETs t->url into t->out, again while it must. A layer goes to an O_TMPFILE file, so a killed
 * pull leaves nothing, and gets its name in the cache once verified; one there already is the
 * same, or is refused where it is opened. */
static void get(struct transfer *t)
{
	char got[DIGEST_LEN + 1] = "sha256:", *where;
	unsigned char hash[32];
	int fd = -1;
	if (t->layer && (fd = open(cache_path, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644)) < 0)
		err(1, "%s", cache_path);
	t->out = t->layer ? fdopen(fd, "w") : open_memstream(&t->body, &t->len);
	t->md = EVP_MD_CTX_new();
	if (!t->out || !t->md || !EVP_DigestInit_ex(t->md, EVP_sha256(), NULL))
		errx(1, "out of memory");
	for (int again = 1; again;) {
		CURL *h = start(t);
		again = must_retry(t, h, curl_easy_perform(h));
		curl_easy_cleanup(h);
	}
	if (!EVP_DigestFinal_ex(t->md, hash, NULL))
		errx(1, "sha256 failed");
	for (int i = 0; i < 32; i++)
		sprintf(got + 7 + 2 * i, "%02x", hash[i]);
	/* an error page, a truncated or corrupted body */
	if (*t->digest && strcmp(got, t->digest))
		errx(1, "%s: digest mismatch: got %s", t->digest, got);
	strcpy(t->digest, got);
	where = xasprintf("/proc/self/fd/%d", fileno(t->out));
	if (t->layer &&
	    (fflush(t->out) || linkat(AT_FDCWD, where, cache_fd, t->digest, AT_SYMLINK_FOLLOW)) &&
	    errno != EEXIST)
		err(1, "%s/%s", cache_path, t->digest);
	if (fclose(t->out))
		err(1, "%s/%s", cache_path, t->digest);
}

/* GETs the JSON object at base_url/path; digest, if set, is what it must hash to. */
static cJSON *registry_get(const char *path, const char *digest, char got[DIGEST_LEN + 1])
{
	struct transfer t = { .url = xasprintf("%s/%s", base_url, path) };
	strcpy(t.digest, digest ? digest : "");
	get(&t);
	if (got)
		strcpy(got, t.digest);
	return parse_object(t.body, path);
}

/* a parameter of a WWW-Authenticate challenge, quoted or not, whatever their order */
static char *challenge_param(const char *challenge, const char *key)
{
	regmatch_t m[2];
	if (!matches(xasprintf("[ ,]%s=\"?([^\",]*)", key), challenge, m, 2))
		return NULL;
	return group(challenge, m[1]);
}

/* Basic: the user's credentials. Bearer: a pull token for the repository from the realm the
 * registry named. */
static void authenticate(const char *challenge)
{
	char *realm = challenge_param(challenge, "realm");
	char *service = challenge_param(challenge, "service");
	struct transfer t = { 0 };
	const char *token;
	cJSON *json;
	auth = credentials ? xasprintf("Authorization: Basic %s", credentials) : NULL;
	if (!strncasecmp(challenge, "Basic", 5))
		return;
	if (strncasecmp(challenge, "Bearer", 6) || !realm)
		errx(1, "%s: unsupported authentication: %s", ref.host, challenge);
	t.url = xasprintf("%s%cservice=%s&scope=%s", realm, strchr(realm, '?') ? '&' : '?',
	                  curl_easy_escape(NULL, service ? service : "", 0),
	                  curl_easy_escape(NULL, xasprintf("repository:%s:pull", ref.repo), 0));
	get(&t);
	json = parse_object(t.body, realm);
	token = json_string(json, "token", realm);
	if (!token)
		token = json_string(json, "access_token", realm);
	if (!token)
		errx(1, "%s: no token in the answer", realm);
	/* a line break would end the header, and start another */
	if (strpbrk(token, "\r\n"))
		errx(1, "%s: a line break in the token", realm);
	auth = xasprintf("Authorization: Bearer %s", token);
}

/* An auths key names a registry as "host", "https://host/..." or, for Docker Hub,
 * "https://index.docker.io/v1/" (or "index.docker.io/..."). */
static int names_registry(const char *key)
{
	const char *host = strstr(key, "://") ? strstr(key, "://") + 3 : key;
	size_t n = strcspn(host, "/");
	if (!strcmp(ref.registry, "docker.io") && !strncmp(host, "index.docker.io/", 16))
		return 1;
	return strlen(ref.registry) == n && !strncmp(host, ref.registry, n);
}

/* The credentials for the registry in docker's auth file, where `docker login` keeps them. */
static void load_credentials(void)
{
	const char *docker = getenv("DOCKER_CONFIG"), *text;
	const char *file = docker ? xasprintf("%s/config.json", docker)
	                          : xasprintf("%s/.docker/config.json", getenv("HOME"));
	const cJSON *auths = NULL, *e;
	if ((text = read_fd(open(file, O_RDONLY | O_CLOEXEC), file, MAX_BODY)))
		auths = json_get(parse_object(text, file), "auths", cJSON_IsObject, "an object",
		                 file);
	cJSON_ArrayForEach(e, auths)
		if (!credentials && names_registry(e->string))
			credentials = (char *)json_string(e, "auth", file);
}

/* "os/arch[/variant]" of a platform object */
static const char *platform_name(const cJSON *p)
{
	const char *os = json_string(p, "os", "platform");
	const char *arch = json_string(p, "architecture", "platform");
	const char *variant = json_string(p, "variant", "platform");
	return xasprintf("%s/%s%s%s", os ? os : "?", arch ? arch : "?", variant ? "/" : "",
	                 variant ? variant : "");
}

/* The wanted platform's manifest in an index: a platform given without variant takes any. */
static const char *select_platform(const cJSON *index)
{
	const char *name;
	const cJSON *m;
	size_t n = strlen(want);
	cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(index, "manifests")) {
		name = platform_name(cJSON_GetObjectItemCaseSensitive(m, "platform"));
		if (!strncmp(name, want, n) && (!name[n] || name[n] == '/'))
			return json_string(m, "digest", "index");
	}
	errx(1, "%s: no image for %s (docker manifest inspect lists those there are)", image, want);
}

static void write_file(int dirfd, const char *path, int flags, const char *text)
{
	int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC | flags, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd))
		err(1, "%s", path);
}

/* config.json is the image's config object, less what would grant the image host access: net,
 * rw and host paths as volumes (d-run refuses /proc and /dev as volumes or working directory).
 * image.txt names the image and its platform. */
static void write_config(cJSON *json, const char *what, const char *full_name)
{
	cJSON *volumes, *v, *next;
	cJSON *config = cJSON_DetachItemFromObjectCaseSensitive(json, "config");
	if (!cJSON_IsObject(config))
		config = cJSON_CreateObject();
	/* only the user can grant them; each may be there more than once */
	while (cJSON_DetachItemFromObjectCaseSensitive(config, "net") ||
	       cJSON_DetachItemFromObjectCaseSensitive(config, "rw"))
		continue;
	volumes = cJSON_GetObjectItemCaseSensitive(config, "Volumes");
	for (v = cJSON_IsObject(volumes) ? volumes->child : NULL; v; v = next) {
		next = v->next;
		if (v->string[0] == '/' && !strchr(v->string, ':'))
			continue;
		warnx("%s: image volume \"%s\" dropped: not an image path", what, v->string);
		cJSON_Delete(cJSON_DetachItemViaPointer(volumes, v));
	}
	write_file(out_fd, "config.json", O_CREAT | O_EXCL, xasprintf("%s\n", cJSON_Print(config)));
	write_file(out_fd, "image.txt", O_CREAT | O_EXCL,
	           xasprintf("%s\n%s\n", full_name, platform_name(json)));
}

/* rm -rf by fds, never following a symlink; nothing there, or a file as a parent, is no error */
static void remove_tree(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, OPEN_DIR);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			remove_tree(fd, de->d_name);
	if (d)
		closedir(d);
	if (unlinkat(dirfd, name, d ? AT_REMOVEDIR : 0) && errno != ENOENT && errno != ENOTDIR)
		err(1, "remove %s", name);
}

static int compare(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Below an opaque directory: removes what this layer did not write, looks into what it did. */
static int clear_lower(const char *path, const struct stat *st __attribute__((unused)),
                       int type __attribute__((unused)), struct FTW *ftw)
{
	if (!strncmp(path, "./", 2))
		path += 2;
	if (ftw->level == 0 || tfind(path, &written, compare))
		return FTW_CONTINUE;
	remove_tree(AT_FDCWD, path);
	return FTW_SKIP_SUBTREE;
}

/* Clears each opaque directory once, in order: "dir/" comes right before what it holds, which
 * is cleared with it. So each entry is looked at once, however many markers a layer has. */
static void clear_opaque(const void *node, VISIT visit, int depth __attribute__((unused)))
{
	const char *dir = *(const char **)node;
	if ((visit != postorder && visit != leaf) ||
	    (cleared && !strncmp(dir, cleared, strlen(cleared))))
		return;
	cleared = dir;
	dir = *dir ? strndup(dir, strlen(dir) - 1) : ".";
	if (nftw(dir, clear_lower, 16, FTW_PHYS | FTW_ACTIONRETVAL) && errno != ENOENT &&
	    errno != ENOTDIR)
		err(1, "%s", dir);
}

/* Whiteouts apply to lower layers only, wherever they stand in this layer's tar: a file is
 * removed now unless this layer wrote it, an opaque directory is cleared at the end. */
static void apply_whiteout(char *name, char *base)
{
	if (!strcmp(base, ".wh..wh..opq")) {
		*base = '\0';
		tsearch(name, &opaque, compare);
		return;
	}
	memmove(base, base + 4, strlen(base + 4) + 1);
	/* ".wh.", ".wh.." and aufs' own ".wh..wh.*" name nothing to remove */
	if (*base && strcmp(base, ".") && strcmp(base, "..") && strncmp(base, ".wh.", 4) &&
	    !tfind(name, &written, compare))
		remove_tree(AT_FDCWD, name);
}

static void copy_data(struct archive *in, struct archive *out, const char *name)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int r;
	while ((r = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK)
		if (archive_write_data_block(out, buf, len, off) < ARCHIVE_OK)
			errx(1, "%s: %s", name, archive_error_string(out));
	if (r != ARCHIVE_EOF)
		errx(1, "%s: %s", name, archive_error_string(in));
	if (archive_write_finish_entry(out) < ARCHIVE_WARN)
		errx(1, "%s: %s", name, archive_error_string(out));
}

/* The entry's name without "./", "/" or a trailing "/"; the root is "". */
static char *entry_name(struct archive_entry *e)
{
	const char *p = archive_entry_pathname(e);
	char *name;
	while (*p == '/' || !strncmp(p, "./", 2))
		p++;
	name = xasprintf("%s", strcmp(p, ".") ? p : "");
	for (size_t n = strlen(name); n && name[n - 1] == '/'; n--)
		name[n - 1] = '\0';
	return name;
}

/* One tar entry, as docker applies it: what stands at its name goes first unless both are
 * directories; devices are skipped, setuid and setgid bits dropped. */
static void extract_entry(struct archive *in, struct archive *out, struct archive_entry *e)
{
	mode_t type = archive_entry_filetype(e);
	mode_t perm = archive_entry_perm(e) & ~(S_ISUID | S_ISGID);
	char *name = entry_name(e), *base = strrchr(name, '/');
	struct stat st;
	base = base ? base + 1 : name;
	if (!strncmp(base, ".wh.", 4)) {
		apply_whiteout(name, base);
		return;
	}
	if (type == AE_IFCHR || type == AE_IFBLK) {
		warnx("%s: a device node: skipped", name);
		return;
	}
	if (!*name && type != AE_IFDIR)
		errx(1, "the root entry is not a directory");
	/* so that the user can rm -rf the result */
	archive_entry_set_perm(e, perm | (type == AE_IFDIR && rootless ? 0700 : 0));
	if (*name && !lstat(name, &st) && !(S_ISDIR(st.st_mode) && type == AE_IFDIR))
		remove_tree(AT_FDCWD, name);
	archive_entry_set_pathname(e, *name ? name : ".");
	if (archive_write_header(out, e) < ARCHIVE_WARN)
		errx(1, "%s: %s", name, archive_error_string(out));
	copy_data(in, out, name);
	tsearch(name, &written, compare);
}

static void extract_layer(int fd)
{
	struct archive *in = archive_read_new(), *out = archive_write_disk_new();
	struct archive_entry *e;
	/* SPARSE: a block of zeros is left a hole, as tar --sparse does, so that a small layer
	 * cannot fill the disk with zeros */
	int r, flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SPARSE;
	/* not filter_all: for some formats libarchive runs a program, which a layer could supply */
	archive_read_support_filter_gzip(in);
	archive_read_support_filter_zstd(in);
	archive_read_support_format_tar(in);
	archive_read_support_format_empty(in);
	archive_write_disk_set_options(out, flags | (rootless ? 0 : ARCHIVE_EXTRACT_OWNER));
	if (archive_read_open_fd(in, fd, 1 << 16) != ARCHIVE_OK)
		errx(1, "%s", archive_error_string(in));
	/* A name that is not UTF-8 in a PAX record (as Go writes it), or any that is not ASCII,
	 * fails to convert to the C locale's charset: then libarchive keeps the bytes, as docker
	 * does. We never set a locale, as in one of UTF-8 it would also rewrite names to NFC.
	 * That warning, as any of libarchive's (what it could not restore), is no error. */
	while ((r = archive_read_next_header(in, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN)
		extract_entry(in, out, e);
	if (r != ARCHIVE_EOF)
		errx(1, "%s", archive_error_string(in));
	twalk(opaque, clear_opaque);
	/* it sets the modes and times of directories, now that nothing more goes in them */
	if (archive_write_close(out) != ARCHIVE_OK)
		errx(1, "%s", archive_error_string(out));
}

/* A layer in the cache, or -1 when it is not there. Its name is trusted as its hash: a symlink,
 * anything but a regular file, or a file of another user's (planted while the cache was open to
 * others) is an error. */
static int open_cached(const char *digest)
{
	int fd = openat(cache_fd, digest, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	if (fd < 0 && errno == ENOENT)
		return -1;
	if (fd < 0 || fstat(fd, &st))
		err(1, "%s/%s", cache_path, digest);
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
		errx(1, "%s/%s: not a regular file of yours: remove it", cache_path, digest);
	return fd;
}

/* fork(), with a child that dies with us, even if we died already */
static pid_t fork_child(void)
{
	pid_t parent = getpid(), pid = fork();
	if (pid < 0)
		err(1, "fork");
	if (!pid && (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent))
		_exit(1);
	return pid;
}

/* Waits for the extractor, then shows what it said: only now do we know that what it read was
 * the layer (else the digest check said so, alone). When it failed, it said why; when it was
 * killed, we exit as a shell would report it (137 for SIGKILL). */
static void wait_extractor(void)
{
	int status;
	if (waitpid(extractor, &status, 0) < 0 || lseek(notes, 0, SEEK_SET))
		err(1, "extractor");
	fputs(read_fd(notes, "extractor", MAX_BODY), stderr);
	if (status)
		exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1);
}

/* Unpacks a layer from tee[0], its file in the cache or a pipe its download goes through, in a
 * child chrooted into the rootfs. Unprivileged, a user namespace that maps only ourselves grants
 * the chroot. Its messages start with the layer's digest. */
static void start_extractor(const struct transfer *t)
{
	char *uid_map = xasprintf("0 %u 1", getuid()), *gid_map = xasprintf("0 %u 1", getgid());
	struct __user_cap_header_struct head = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct caps[2];
	if ((notes = memfd_create("extractor", MFD_CLOEXEC)) < 0)
		err(1, "memfd_create");
	if ((extractor = fork_child())) {
		close(t->tee[0]);
		return;
	}
	close(t->tee[1]); /* the pipe's write end is the downloader's: its close ends the layer */
	dup2(notes, 2);
	program_invocation_short_name = xasprintf("d-pull: %s", t->digest);
	/* unprivileged, and a network namespace: nothing to send what it knows to (as root, the
	 * host's network stays: CLONE_NEWNET needs CAP_SYS_ADMIN, which containers lack) */
	if (rootless && unshare(CLONE_NEWUSER | CLONE_NEWNET))
		err(1, "unshare a user namespace");
	if (rootless) {
		write_file(AT_FDCWD, "/proc/self/setgroups", 0, "deny");
		write_file(AT_FDCWD, "/proc/self/uid_map", 0, uid_map);
		write_file(AT_FDCWD, "/proc/self/gid_map", 0, gid_map);
	}
	if (fchdir(rootfs_fd) || chroot("."))
		err(1, "chroot %s/rootfs", out_dir);
	/* It reads bytes not yet verified while they stream, through libarchive, zlib and zstd.
	 * Should one of them have a hole, what gets in must not leave the chroot: it keeps no fd
	 * but the layer on 0 and its messages on 1 and 2 (one of a directory outside leads out),
	 * and of root's powers only what unpacking needs, the owners, modes and times of others'
	 * files; not chroot, mount, mknod or ptrace, ways out of a chroot. (Unprivileged, these are
	 * powers in its user namespace, over its own files.) */
	if (dup2(t->tee[0], 0) < 0 || dup2(2, 1) < 0 || close_range(3, ~0U, 0) ||
	    syscall(SYS_capget, &head, caps))
		err(1, "extractor: confine");
	caps[0].permitted &=
	        1 << CAP_CHOWN | 1 << CAP_DAC_OVERRIDE | 1 << CAP_FOWNER | 1 << CAP_FSETID;
	caps[0].effective = caps[0].permitted;
	caps[1] = (struct __user_cap_data_struct){ 0 };
	if (syscall(SYS_capset, &head, caps))
		err(1, "extractor: capset");
	extract_layer(0);
	_exit(0);
}

/* Unpacks the layers in order: a cached one from its file, touched to keep it 30 days more; a
 * missing one as it downloads into the cache, through a pipe. */
static void fetch_layers(void)
{
	for (struct transfer *t = layers; t < layers + nlayers; t++) {
		if ((t->tee[0] = open_cached(t->digest)) >= 0 && futimens(t->tee[0], NULL))
			err(1, "%s/%s", cache_path, t->digest);
		if (t->tee[0] < 0 && pipe2(t->tee, O_CLOEXEC))
			err(1, "pipe");
		start_extractor(t);
		if (t->tee[1] >= 0)
			get(t);
		/* the end of the layer, for its extractor (-1, for a cached layer: nothing) */
		close(t->tee[1]);
		if (t->tee[1] >= 0 && !quiet)
			warnx("%s: %.1f MB downloaded", t->digest, t->bytes / 1e6);
		wait_extractor();
	}
}

/* The cache's names are trusted as the hashes of their contents: nobody else may write there. */
static void open_cache(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char *base = xdg && *xdg ? xasprintf("%s", xdg) : xasprintf("%s/.cache", home ? home : "");
	struct stat st;
	cache_path = xasprintf("%s/d-utils", base);
	mkdir(base, 0755); /* failures show at open() */
	mkdir(cache_path, 0755);
	if ((cache_fd = open(cache_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    fstat(cache_fd, &st))
		err(1, "%s", cache_path);
	if (st.st_uid != geteuid() || st.st_mode & 022)
		errx(1, "%s: another user's, or writable by others: not trusted", cache_path);
}

/* After the pull, which touched what it used: drops what went unused 30 days. */
static void prune_cache(void)
{
	DIR *d = fdopendir(dup(cache_fd));
	time_t limit = time(NULL) - 30 * 24 * 3600;
	struct dirent *de;
	struct stat st;
	/* not fatal when it fails: the pull itself has succeeded */
	while (d && (de = readdir(d)))
		if (!fstatat(cache_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) &&
		    S_ISREG(st.st_mode) && st.st_mtime < limit && unlinkat(cache_fd, de->d_name, 0))
			warn("prune %s/%s", cache_path, de->d_name);
}

/* Makes DIR, then runs the pull in a child. We wait for its end, or for SIGINT, SIGTERM or
 * SIGHUP (unless our caller ignores them, as nohup does): then we kill it. Its extractor dies
 * with it; the pipe's end they hold closes when both are gone, and nothing writes in DIR any
 * more. We remove the partial DIR unless the pull succeeded, and exit as a shell would report
 * the child, or 128 and the signal that came. */
static void supervise(void)
{
	static const int signals[] = { SIGINT, SIGTERM, SIGHUP, SIGCHLD };
	int sig, status, alive[2];
	struct sigaction old;
	sigset_t set;
	pid_t pid;
	char c;
	signal(SIGCHLD, SIG_DFL); /* ignored, the kernel would reap the child for us */
	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(signals) / sizeof(*signals); i++)
		if (sigaction(signals[i], NULL, &old) || old.sa_handler != SIG_IGN)
			sigaddset(&set, signals[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL) || pipe2(alive, O_CLOEXEC))
		err(1, "signals");
	/* the caller's alone: a run as root in it can leave setuid files (dpkg, with d-run's
	 * filter), which must not be another user's way to become the caller */
	if (mkdirat(parent_fd, out_name, 0700))
		errx(1, "%s: %s", out_dir, errno == EEXIST ? "already exists" : strerror(errno));
	/* the child keeps them blocked: they are ours to act on */
	if (!(pid = fork_child()))
		return;
	close(alive[1]);
	/* a SIGCHLD may also be the child stopping (Ctrl-Z), or another child's end */
	do
		sigwait(&set, &sig); /* fails only for an invalid set */
	while (sig == SIGCHLD && !waitpid(pid, &status, WNOHANG));
	if (sig != SIGCHLD && !kill(pid, SIGKILL))
		waitpid(pid, &status, 0);
	read(alive[0], &c, 1); /* 0, at the end of the child and its extractor */
	if (sig != SIGCHLD || status)
		remove_tree(parent_fd, out_name);
	if (sig != SIGCHLD)
		exit(128 + sig);
	exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

/* The layers of an image manifest, and its config's digest */
static const char *read_manifest(const cJSON *manifest)
{
	const cJSON *config = cJSON_GetObjectItemCaseSensitive(manifest, "config");
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(manifest, "layers"), *layer;
	const char *digest = json_string(config, "digest", "manifest");
	struct transfer *t;
	if (!valid_digest(digest) || !cJSON_IsArray(list))
		errx(1, "%s: unsupported manifest (schema 1?): no config digest or layers", image);
	layers = xrealloc(NULL, cJSON_GetArraySize(list) * sizeof(*layers));
	cJSON_ArrayForEach(layer, list) {
		/* NAN if not a number, which fails every comparison */
		double size = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(layer, "size"));
		t = &layers[nlayers++];
		*t = (struct transfer){ .layer = 1, .tee = { -1, -1 } };
		/* in range before the cast, which would be undefined out of it; 10 TB is far above
		 * any real layer, and exact as a double */
		if (!(size >= 0 && size <= 1e13 && size == (curl_off_t)size))
			errx(1, "%s: manifest: a layer size is not a whole number of bytes", image);
		t->size = size;
		if (!valid_digest(json_string(layer, "digest", "manifest")))
			errx(1, "%s: manifest: invalid layer digest", image);
		strcpy(t->digest, json_string(layer, "digest", "manifest"));
		t->url = xasprintf("%s/blobs/%s", base_url, t->digest);
	}
	return digest;
}

static void pull(void)
{
	char digest[DIGEST_LEN + 1], *pinned;
	const char *reference = ref.digest ? ref.digest : ref.tag, *config;
	cJSON *manifest;
	base_url = xasprintf("https://%s/v2/%s", ref.host, ref.repo);
	/* the digest of the bytes as served: manifests are not always canonical JSON */
	manifest = registry_get(xasprintf("manifests/%s", reference), ref.digest, digest);
	if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(manifest, "manifests"))) {
		reference = select_platform(manifest);
		if (!valid_digest(reference))
			errx(1, "%s: index: no valid digest for %s", image, want);
		manifest = registry_get(xasprintf("manifests/%s", reference), reference, NULL);
	}
	config = read_manifest(manifest);
	pinned = xasprintf("%s%s%s@%s", image, ref.tag ? ":" : "", ref.tag ? ref.tag : "", digest);
	if (!quiet)
		warnx("pulling %s into %s", pinned, out_dir);
	if (mkdirat(out_fd, "rootfs", 0755) || (rootfs_fd = openat(out_fd, "rootfs", OPEN_DIR)) < 0)
		err(1, "%s/rootfs", out_dir);
	fetch_layers();
	write_config(registry_get(xasprintf("blobs/%s", config), config, NULL), config, pinned);
}

int main(int argc, char **argv)
{
	static const struct option options[] = { { "platform", required_argument, NULL, 'p' },
		                                 { NULL, 0, NULL, 0 } };
	const char *platform = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "hq", options, NULL)) != -1)
		switch (c) {
		case 'h': return puts(usage) == EOF;
		case 'q': quiet = 1; break;
		case 'p': platform = optarg; break;
		default: errx(2, "%s", usage);
		}
	if (argc - optind < 1 || argc - optind > 2)
		errx(2, "%s", usage);
	parse_ref(argv[optind]);
	parse_platform(platform);
	out_dir = argv[optind + 1] ? argv[optind + 1] : basename(xasprintf("%s", ref.repo));
	out_name = basename(xasprintf("%s", out_dir));
	rootless = getuid() != 0;
	if ((parent_fd =
	             open(dirname(xasprintf("%s", out_dir)), O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		err(1, "%s", out_dir);
	supervise();
	if ((out_fd = openat(parent_fd, out_name, OPEN_DIR)) < 0)
		err(1, "%s", out_dir);
	open_cache();
	load_credentials();
	pull();
	prune_cache();
	if (!quiet)
		warnx("pulled into %s", out_dir);
	return 0;
}
