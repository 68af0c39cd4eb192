/* SPDX-License-Identifier: MIT */
/* d-pull: fetch an image from a Docker/OCI registry into DIR/rootfs and DIR/config.json.
 * Blobs stream into a content-addressed cache and get their digest as name once verified.
 * Layers are unpacked by a child chrooted into the rootfs (in a user namespace when
 * unprivileged), so no name, link or whiteout in a layer can reach the host. */
#define _GNU_SOURCE
#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <dirent.h>
#include <ftw.h>
#include <libgen.h>
#include <locale.h>
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

/* One GET, into memory or, for a layer, into an unnamed file in the cache. */
struct transfer {
	char *url, *body, *challenge,
		digest[DIGEST_LEN + 1]; /* digest: what the body must hash to, or "" */
	int registry, layer, tries, fd; /* registry: Accept manifests, renew the token on a 401 */
	size_t len;
	FILE *out;
	curl_off_t bytes, size; /* size: what the manifest says a layer has */
	long status;
	EVP_MD_CTX *md;
	struct curl_slist *headers; /* not freed on a retry: rare */
};
static struct {
	char *registry, *host, *repo, *tag, *digest;
} ref;
static const char *want, *out_dir;
static char *base_url, *auth, *credentials, *cache_path; /* auth: an Authorization header */
static int cache_fd, quiet, rootless, insecure, nlayers, done;
static struct transfer *layers;
static void *written; /* the names the layer being unpacked wrote, which its whiteouts spare */
static pid_t parent, extractor;
static const char usage[] = "usage: d-pull [-h] [-q] [--platform OS/ARCH[/VARIANT]] "
			    "[registry/]name[:tag|@digest] [DIR]";

static int valid_digest(const char *d)
{
	return d && strlen(d) == DIGEST_LEN && !strncmp(d, "sha256:", 7) &&
	       strspn(d + 7, "0123456789abcdef") == 64;
}

/* distribution's reference grammar, the tag and digest included */
static const char name_grammar[] =
	"^((localhost|[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+|[A-Za-z0-9.-]+:[0-9]+|\\[[0-9a-fA-F:]+\\])"
	"(:[0-9]+)?/)?"
	"[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
	"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$";

static void parse_ref(const char *arg)
{
	char *s = xasprintf("%s", arg), *p, *slash = strchr(s, '/');
	regex_t re;
	if (regcomp(&re, name_grammar, REG_EXTENDED | REG_NOSUB) || regexec(&re, arg, 0, NULL, 0))
		errx(1,
		     "%s: invalid image name: want [registry/]name[:tag][@sha256:digest], name in "
		     "lowercase",
		     arg);
	if ((p = strchr(s, '@')))
		*p = '\0', ref.digest = p + 1;
	ref.registry = "docker.io";
	/* as docker: the first component names a registry only if it looks like a host */
	if (slash && (memchr(s, '.', slash - s) || memchr(s, ':', slash - s) ||
		      !strncmp(s, "localhost/", 10)))
		*slash = '\0', ref.registry = s, s = slash + 1;
	if ((p = strchr(s, ':')))
		*p++ = '\0';
	ref.tag = p ? p : ref.digest ? NULL : "latest";
	if (!strcmp(ref.registry, "index.docker.io") ||
	    !strcmp(ref.registry, "registry-1.docker.io"))
		ref.registry = "docker.io";
	ref.host = strcmp(ref.registry, "docker.io") ? ref.registry : "registry-1.docker.io";
	ref.repo = strcmp(ref.registry, "docker.io") || strchr(s, '/') ? s
								       : xasprintf("library/%s", s);
}

/* --platform, else GOOS/GOARCH as xi/d-utils reads them, else the host's */
static void parse_platform(const char *arg)
{
	static struct utsname u;
	const char *arch;
	regex_t re;
	if (uname(&u))
		err(1, "uname");
	arch = !strcmp(u.machine, "x86_64")	? "amd64"
	       : !strcmp(u.machine, "aarch64")	? "arm64"
	       : !strcmp(u.machine, "i686")	? "386"
	       : !strncmp(u.machine, "armv", 4) ? "arm"
						: u.machine;
	arch = getenv("GOARCH") ? getenv("GOARCH") : arch;
	want = arg ? arg : xasprintf("%s/%s", getenv("GOOS") ? getenv("GOOS") : "linux", arch);
	if (regcomp(&re, "^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$", REG_EXTENDED | REG_NOSUB) ||
	    regexec(&re, want, 0, NULL, 0))
		errx(2, "platform %s: want OS/ARCH[/VARIANT]", want);
}

/* what a user can do about an HTTP error */
static _Noreturn void die_http(long status, const char *what)
{
	errx(1, "%s/%s: %s: HTTP %ld from %s: %s", ref.registry, ref.repo, what, status, ref.host,
	     status == 401 || status == 403
		     ? "access denied: check the name, or log in (docker login, podman login)"
	     : status == 404 ? "not found: check the name and the tag"
	     : status == 429 ? "too many requests: wait, or log in for a higher rate limit"
			     : "unexpected answer");
}

static size_t on_data(char *data, size_t size, size_t n, void *userdata)
{
	struct transfer *t = userdata;
	if ((t->bytes += n) > (t->layer ? t->size : MAX_BODY))
		return 0; /* curl fails with CURLE_WRITE_ERROR */
	return EVP_DigestUpdate(t->md, data, n) ? fwrite(data, size, n, t->out) : 0;
}

/* (Re)starts a transfer; a layer goes to an O_TMPFILE file, so a killed pull leaves nothing. */
static CURL *start(struct transfer *t)
{
	static const char accept[] = "Accept: application/vnd.oci.image.index.v1+json, "
				     "application/vnd.docker.distribution.manifest.list.v2+json, "
				     "application/vnd.oci.image.manifest.v1+json, "
				     "application/vnd.docker.distribution.manifest.v2+json";
	const char *ca = getenv("CURL_CA_BUNDLE");
	CURL *h = curl_easy_init();
	int fd = t->layer ? open(cache_path, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644) : -1;
	if (!(t->out = t->layer ? fdopen(fd, "w") : open_memstream(&t->body, &t->len)))
		err(1, "%s", t->layer ? cache_path : "open_memstream");
	if (!(t->md = t->md ? t->md : EVP_MD_CTX_new()) ||
	    !EVP_DigestInit_ex(t->md, EVP_sha256(), NULL))
		errx(1, "sha256 failed");
	t->bytes = 0;
	t->headers = t->registry ? curl_slist_append(NULL, accept) : NULL;
	if (auth)
		t->headers = curl_slist_append(t->headers, auth);
	if (!h)
		errx(1, "curl_easy_init failed");
	curl_easy_setopt(h, CURLOPT_URL, t->url);
	/* Blobs are often redirected to a CDN: curl sends Authorization only to the first host. */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
	if (ca || (ca = getenv("SSL_CERT_FILE")))
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(h, CURLOPT_PRIVATE, t);
	return h;
}

static void authenticate(const char *challenge);

/* Ends a transfer; 1 when it must start again: connection errors and 5xx after a backoff,
 * and a 401 from the registry with a new token (the first request, or one that expired). */
static int finish(struct transfer *t, CURL *h, CURLcode rc)
{
	char got[DIGEST_LEN + 1] = "sha256:";
	unsigned char hash[32];
	struct curl_header *header;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t->status);
	t->challenge = curl_easy_header(h, "WWW-Authenticate", 0, CURLH_HEADER, -1, &header)
			       ? NULL
			       : xasprintf("%s", header->value);
	curl_easy_cleanup(h);
	/* plain HTTP only where the server does not speak TLS, on a loopback registry (as docker)
	 * or one in $D_PULL_INSECURE; a certificate that does not verify is an error */
	if (rc == CURLE_SSL_CONNECT_ERROR && t->registry && insecure &&
	    !strncmp(base_url, "https", 5)) {
		base_url = xasprintf("http%s", base_url + 5);
		t->url = xasprintf("http%s", t->url + 5);
		return fclose(t->out), 1;
	}
	if (++t->tries < MAX_TRIES &&
	    (rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT ||
	     rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
	     rc == CURLE_PARTIAL_FILE || (rc == CURLE_OK && t->status >= 500)))
		return fclose(t->out), sleep(1 << t->tries), 1;
	if (rc != CURLE_OK)
		errx(1, "%s: %s", t->url, curl_easy_strerror(rc));
	if (t->registry && t->status == 401 && t->tries < MAX_TRIES && t->challenge)
		return fclose(t->out), authenticate(t->challenge), 1;
	if (t->registry && t->status != 200)
		die_http(t->status, strstr(t->url, "/v2/") ? strstr(t->url, "/v2/") + 4 : t->url);
	if (!EVP_DigestFinal_ex(t->md, hash, NULL))
		errx(1, "sha256 failed");
	for (int i = 0; i < 32; i++)
		sprintf(got + 7 + 2 * i, "%02x", hash[i]);
	/* an error page, a truncated or corrupted body: nothing of it gets a name in the cache */
	if (*t->digest && strcmp(got, t->digest))
		errx(1, "%s: digest mismatch: got %s", t->digest, got);
	strcpy(t->digest, got);
	/* a layer's verified body gets its name in the cache; one there already is the same */
	snprintf(got, sizeof(got), "/proc/self/fd/%d", fileno(t->out));
	if ((t->layer &&
	     (fflush(t->out) || (linkat(AT_FDCWD, got, cache_fd, t->digest, AT_SYMLINK_FOLLOW) &&
				 errno != EEXIST))) ||
	    fclose(t->out))
		err(1, "%s/%s", cache_path, t->digest);
	return 0;
}

static void get(struct transfer *t)
{
	for (CURL *h = start(t); finish(t, h, curl_easy_perform(h)); h = start(t))
		;
}

/* GETs base_url/path into memory; digest, if set, is what it must hash to. */
static char *registry_get(const char *path, const char *digest, char got[DIGEST_LEN + 1])
{
	struct transfer t = { .url = xasprintf("%s/%s", base_url, path), .registry = 1 };
	if (digest && !valid_digest(digest))
		errx(1, "%s/%s: invalid digest in %s", ref.registry, ref.repo, path);
	strcpy(t.digest, digest ? digest : "");
	get(&t);
	if (got)
		strcpy(got, t.digest);
	return t.body;
}

/* a parameter of a WWW-Authenticate challenge, whatever their order */
static char *challenge_param(const char *challenge, const char *key)
{
	size_t n = strlen(key);
	for (const char *p = challenge; (p = strcasestr(p, key)); p += n)
		if (p > challenge && strchr(" ,", p[-1]) && p[n] == '=')
			return p[n + 1] == '"' ? strndup(p + n + 2, strcspn(p + n + 2, "\""))
					       : strndup(p + n + 1, strcspn(p + n + 1, ", "));
	return NULL;
}

/* Basic: the user's credentials. Bearer: a pull token for the repository from the realm. */
static void authenticate(const char *challenge)
{
	char *realm = challenge_param(challenge, "realm"),
	     *service = challenge_param(challenge, "service");
	char *basic = credentials ? xasprintf("Authorization: Basic %s", credentials) : NULL;
	struct transfer t = { 0 };
	const char *token;
	cJSON *json;
	auth = basic; /* for Basic, and to ask for a token */
	if (!strncasecmp(challenge, "Basic", 5))
		return;
	if (strncasecmp(challenge, "Bearer", 6) || !realm)
		errx(1, "%s: unsupported authentication: %s", ref.host, challenge);
	t.url = xasprintf("%s%cservice=%s&scope=%s", realm, strchr(realm, '?') ? '&' : '?',
			  curl_easy_escape(NULL, service ? service : "", 0),
			  curl_easy_escape(NULL, xasprintf("repository:%s:pull", ref.repo), 0));
	get(&t);
	if (t.status != 200)
		die_http(t.status, credentials ? "token request with the saved credentials"
					       : "token request");
	json = parse_object(t.body, realm);
	if (!(token = json_string(json, "token", realm)) &&
	    !(token = json_string(json, "access_token", realm)))
		errx(1, "%s: no token in the answer", realm);
	auth = xasprintf("Authorization: Bearer %s", token);
	cJSON_Delete(json);
}

/* The first of podman's and docker's auth files with an entry for the registry, as podman reads
 * them. They name it "host", "https://host/..." or, for Docker Hub, "https://index.docker.io/v1/".
 */
static void load_credentials(void)
{
	const char *run = getenv("XDG_RUNTIME_DIR"), *docker = getenv("DOCKER_CONFIG"),
		   *home = getenv("HOME"), *k;
	char *files[] = { getenv("REGISTRY_AUTH_FILE"),
			  run ? xasprintf("%s/containers/auth.json", run) : NULL,
			  docker ? xasprintf("%s/config.json", docker)
			  : home ? xasprintf("%s/.docker/config.json", home)
				 : NULL };
	const cJSON *e;
	cJSON *json;
	size_t n;
	for (size_t i = 0; i < sizeof(files) / sizeof(*files) && !credentials; i++) {
		json = files[i] && (k = read_fd(open(files[i], O_RDONLY | O_CLOEXEC), files[i],
						MAX_BODY))
			       ? parse_object(k, files[i])
			       : NULL;
		cJSON_ArrayForEach(e,
				   json_get(json, "auths", cJSON_IsObject, "an object", files[i]))
		{
			k = strstr(e->string, "://") ? strstr(e->string, "://") + 3 : e->string;
			n = strcspn(k, "/");
			if ((n == 15 && !strncmp(k, "index.docker.io", n)) ||
			    (n == 20 && !strncmp(k, "registry-1.docker.io", n)))
				k = "docker.io", n = 9;
			if (!credentials && strlen(ref.registry) == n &&
			    !strncmp(k, ref.registry, n))
				credentials = (char *)json_string(e, "auth", files[i]);
		}
	}
}

/* "os/arch[/variant]" of a platform object */
static const char *platform_name(const cJSON *p)
{
	const char *os = json_string(p, "os", "platform"),
		   *arch = json_string(p, "architecture", "platform");
	const char *variant = json_string(p, "variant", "platform");
	if (!variant && arch) /* the spec's defaults */
		variant = !strcmp(arch, "arm64") ? "v8" : !strcmp(arch, "arm") ? "v7" : NULL;
	return xasprintf("%s/%s%s%s", os ? os : "?", arch ? arch : "?", variant ? "/" : "",
			 variant ? variant : "");
}

/* The wanted platform's manifest in an index: a platform given without variant takes any. */
static const char *select_platform(const cJSON *index)
{
	const char *name, *digest;
	char *available = "";
	const cJSON *m;
	size_t n = strlen(want);
	cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(index, "manifests"))
	{
		name = platform_name(cJSON_GetObjectItemCaseSensitive(m, "platform"));
		digest = json_string(m, "digest", "index");
		if (!strncmp(name, want, n) && (!name[n] || name[n] == '/'))
			return digest;
		if (strncmp(name, "unknown/", 8) &&
		    strlen(available) < 400) /* not attestations, not all of a huge list */
			available = xasprintf("%s %s", available, name);
	}
	errx(1, "%s/%s: no image for %s; available:%s", ref.registry, ref.repo, want,
	     *available ? available : " none");
}

static void write_file(const char *path, int flags, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | flags, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd))
		err(1, "%s", path);
}

/* config.json is the image's config object, less what would grant the image host access. */
static void write_config(const char *text, const char *what, char **platform)
{
	cJSON *json = parse_object(text, what), *config, *volumes, *v, *next;
	config = cJSON_DetachItemFromObjectCaseSensitive(json, "config");
	if (!cJSON_IsObject(config))
		cJSON_Delete(config), config = cJSON_CreateObject();
	while ((v = cJSON_DetachItemFromObjectCaseSensitive(config, "net")) ||
	       (v = cJSON_DetachItemFromObjectCaseSensitive(config, "rw")))
		warnx("%s: image config sets \"%s\": dropped, only the user can grant it", what,
		      v->string);
	volumes = cJSON_GetObjectItemCaseSensitive(config, "Volumes");
	for (v = cJSON_IsObject(volumes) ? volumes->child : NULL; v; v = next) {
		next = v->next;
		if (v->string[0] != '/' || strchr(v->string, ':')) {
			warnx("%s: image volume \"%s\" dropped: only the user can bind host paths",
			      what, v->string);
			cJSON_Delete(cJSON_DetachItemViaPointer(volumes, v));
		}
	}
	*platform = xasprintf("%s", platform_name(json));
	write_file(xasprintf("%s/config.json", out_dir), O_CREAT | O_EXCL,
		   xasprintf("%s\n", cJSON_Print(config)));
}

/* rm -rf by fds, never following a symlink; nothing there, or a file as a parent, is no error */
static void remove_tree(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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

/* Opaque whiteout: remove what this layer did not write below the directory, look into what it did.
 */
static int clear_lower(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)type;
	if (ftw->level == 0 || tfind(path + (strncmp(path, "./", 2) ? 0 : 2), &written, compare))
		return FTW_CONTINUE;
	remove_tree(AT_FDCWD, path);
	return FTW_SKIP_SUBTREE;
}

/* Whiteouts apply to lower layers only, wherever they stand in this layer's tar. */
static void apply_whiteout(char *name, char *base)
{
	if (strcmp(base, ".wh..wh..opq")) {
		memmove(base, base + 4, strlen(base + 4) + 1);
		/* ".wh.", ".wh.." and aufs' own ".wh..wh.*" name nothing to remove */
		if (*base && strcmp(base, ".") && strcmp(base, "..") && strncmp(base, ".wh.", 4) &&
		    !tfind(name, &written, compare))
			remove_tree(AT_FDCWD, name);
		return;
	}
	*(base == name ? base : base - 1) = '\0';
	if (nftw(*name ? name : ".", clear_lower, 16, FTW_PHYS | FTW_ACTIONRETVAL) &&
	    errno != ENOENT && errno != ENOTDIR)
		err(1, "%s", name);
}

/* One tar entry, as docker applies it: what stands at its name goes first unless both are
 * directories; devices are skipped, setuid and setgid bits dropped. The root is "". */
static void extract_entry(struct archive *in, struct archive *out, struct archive_entry *e,
			  const char *digest)
{
	static int warned;
	const char *p = archive_entry_pathname(e);
	mode_t type = archive_entry_filetype(e),
	       perm = archive_entry_perm(e) & ~(S_ISUID | S_ISGID);
	char *name, *base;
	const void *buf;
	struct stat st;
	size_t n, len;
	la_int64_t off;
	int r;
	while (*p == '/' || (p[0] == '.' && (p[1] == '/' || !p[1])))
		p += p[0] == '.' && p[1] == '/' ? 2 : 1;
	name = xasprintf("%s", p);
	for (n = strlen(name); n && name[n - 1] == '/'; n--)
		name[n - 1] = '\0';
	base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
	if (!strncmp(base, ".wh.", 4))
		return apply_whiteout(name, base);
	if (type == AE_IFCHR || type == AE_IFBLK) {
		if (!warned++)
			warnx("%s: skipping device nodes such as %s", digest, name);
		return;
	}
	if (!*name && type != AE_IFDIR)
		errx(1, "%s: the root entry is not a directory", digest);
	archive_entry_set_perm(
		e, perm | (type == AE_IFDIR && rootless ? 0700 : 0)); /* so the user can rm -rf */
	if (*name && !lstat(name, &st) && !(S_ISDIR(st.st_mode) && type == AE_IFDIR))
		remove_tree(AT_FDCWD, name);
	archive_entry_set_pathname(e, *name ? name : ".");
	if ((r = archive_write_header(out, e)) < ARCHIVE_WARN)
		errx(1, "%s: %s: %s", digest, name, archive_error_string(out));
	if (r == ARCHIVE_WARN)
		warnx("%s: %s: %s", digest, name, archive_error_string(out));
	while ((r = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK)
		if (archive_write_data_block(out, buf, len, off) < ARCHIVE_OK)
			errx(1, "%s: %s: %s", digest, name, archive_error_string(out));
	if (r != ARCHIVE_EOF || archive_write_finish_entry(out) < ARCHIVE_WARN)
		errx(1, "%s: %s: %s", digest, name,
		     archive_error_string(r != ARCHIVE_EOF ? in : out));
	tsearch(name, &written, compare);
}

static void extract_layer(int fd, const char *digest)
{
	struct archive *in = archive_read_new(), *out = archive_write_disk_new();
	struct archive_entry *e;
	int r;
	/* not filter_all: for some formats libarchive runs a program, which a layer could supply */
	archive_read_support_filter_gzip(in);
	archive_read_support_filter_zstd(in);
	archive_read_support_format_tar(in);
	archive_read_support_format_empty(in);
	archive_write_disk_set_options(out, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
						    (rootless ? 0 : ARCHIVE_EXTRACT_OWNER));
	if (archive_read_open_fd(in, fd, 1 << 16) != ARCHIVE_OK)
		errx(1, "%s: %s", digest, archive_error_string(in));
	while ((r = archive_read_next_header(in, &e)) == ARCHIVE_OK)
		extract_entry(in, out, e, digest);
	if (r != ARCHIVE_EOF || archive_write_close(out) != ARCHIVE_OK)
		errx(1, "%s: %s", digest, archive_error_string(r != ARCHIVE_EOF ? in : out));
	archive_read_free(in);
	archive_write_free(out);
	tdestroy(written, free); /* names not in the tree are left to the process's exit */
	written = NULL;
	close(fd);
}

/* A child chrooted into the rootfs unpacks each layer once it has its name in the cache, while
 * later ones still download. Unprivileged, a user namespace that maps only ourselves grants the
 * chroot. */
static void start_extractor(const char *rootfs)
{
	char *uid_map = xasprintf("0 %u 1", getuid()), *gid_map = xasprintf("0 %u 1", getgid());
	int fd;
	for (int i = 0; i < nlayers;
	     i++) /* cached layers are held open, and touched: kept 30 days more */
		if ((layers[i].fd = openat(cache_fd, layers[i].digest, O_RDONLY | O_CLOEXEC)) < 0
			    ? errno != ENOENT
			    : futimens(layers[i].fd, NULL))
			err(1, "%s/%s", cache_path, layers[i].digest);
	if ((extractor = fork()) < 0)
		err(1, "fork");
	if (extractor)
		return;
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
		_exit(1);
	if (rootless && unshare(CLONE_NEWUSER))
		err(1, "unshare a user namespace");
	if (rootless) {
		write_file("/proc/self/setgroups", 0, "deny");
		write_file("/proc/self/uid_map", 0, uid_map);
		write_file("/proc/self/gid_map", 0, gid_map);
	}
	if (chroot(rootfs) || chdir("/"))
		err(1, "chroot %s", rootfs);
	for (int i = 0; i < nlayers; i++) {
		while ((fd = layers[i].fd) < 0 &&
		       (fd = openat(cache_fd, layers[i].digest, O_RDONLY | O_CLOEXEC)) < 0 &&
		       errno == ENOENT)
			usleep(10000);
		if (fd < 0)
			err(1, "%s/%s", cache_path, layers[i].digest);
		extract_layer(fd, layers[i].digest);
	}
	_exit(0);
}

/* Downloads the missing layers, a few at once. */
static void fetch_layers(void)
{
	CURLM *multi = curl_multi_init();
	int pending = 0, running, left;
	struct transfer *t;
	CURLMsg *msg;
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 4L);
	for (t = layers; t < layers + nlayers; t++) {
		if (t->fd >= 0)
			continue;
		pending++;
		curl_multi_add_handle(multi, start(t));
	}
	while (pending) {
		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left))) {
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
			curl_multi_remove_handle(multi, msg->easy_handle);
			if (finish(t, msg->easy_handle, msg->data.result)) {
				curl_multi_add_handle(multi, start(t));
				continue;
			}
			pending--;
			if (!quiet)
				warnx("%s: %.1f MB downloaded", t->digest, t->bytes / 1e6);
		}
		if (pending)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
}

static void open_cache(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	cache_path = xdg && *xdg ? xasprintf("%s/d-utils", xdg)
				 : xasprintf("%s/.cache/d-utils", home ? home : "");
	mkdir(dirname(xasprintf("%s", cache_path)), 0755); /* ~/.cache; failures show at open() */
	mkdir(cache_path, 0755);
	if ((cache_fd = open(cache_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		err(1, "%s", cache_path);
}

/* After the pull, which touched what it used: drops what went unused 30 days; a failure only warns
 */
static void prune_cache(void)
{
	DIR *d = fdopendir(dup(cache_fd));
	time_t limit = time(NULL) - 30 * 24 * 3600;
	struct dirent *de;
	for (struct stat st; d && (de = readdir(d));)
		if (!fstatat(cache_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) &&
		    S_ISREG(st.st_mode) && st.st_mtime < limit && unlinkat(cache_fd, de->d_name, 0))
			warn("prune %s/%s", cache_path, de->d_name);
}

/* At an exit before the end: stop the extractor, remove the partial DIR. */
static void cleanup(void)
{
	if (done || getpid() != parent)
		return;
	if (extractor > 0 && !kill(extractor, SIGKILL))
		waitpid(extractor, NULL, 0);
	remove_tree(AT_FDCWD, out_dir);
}

static void pull(void)
{
	char digest[DIGEST_LEN + 1], *platform, *full_name,
		*rootfs = xasprintf("%s/rootfs", out_dir);
	const char *reference = ref.digest ? ref.digest : ref.tag, *config;
	const cJSON *layer, *list;
	cJSON *manifest;
	int status;
	base_url = xasprintf("https://%s/v2/%s", ref.host, ref.repo);
	/* the digest of the bytes as served: manifests are not always canonical JSON */
	manifest = parse_object(
		registry_get(xasprintf("manifests/%s", reference), ref.digest, digest), reference);
	if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(manifest, "manifests"))) {
		reference = select_platform(manifest);
		manifest = parse_object(
			registry_get(xasprintf("manifests/%s", reference), reference, NULL),
			reference);
	}
	config = json_string(cJSON_GetObjectItemCaseSensitive(manifest, "config"), "digest",
			     "manifest");
	list = cJSON_GetObjectItemCaseSensitive(manifest, "layers");
	if (!valid_digest(config) || !cJSON_IsArray(list))
		errx(1, "%s/%s: unsupported manifest (schema 1?): no config digest or layers",
		     ref.registry, ref.repo);
	layers = xrealloc(NULL, cJSON_GetArraySize(list) * sizeof(*layers));
	cJSON_ArrayForEach(layer, list)
	{
		if (!valid_digest(reference = json_string(layer, "digest", "manifest")))
			errx(1, "%s/%s: manifest: invalid layer digest", ref.registry, ref.repo);
		layers[nlayers] = (struct transfer){
			.url = xasprintf("%s/blobs/%s", base_url, reference),
			.registry = 1,
			.layer = 1,
			.size = cJSON_GetNumberValue(
				cJSON_GetObjectItemCaseSensitive(layer, "size"))
		};
		strcpy(layers[nlayers++].digest, reference);
	}
	full_name = xasprintf("%s/%s%s%s@%s", ref.registry, ref.repo, ref.tag ? ":" : "",
			      ref.tag ? ref.tag : "", digest);
	if (!quiet)
		warnx("pulling %s into %s", full_name, out_dir);
	if (mkdir(rootfs, 0755))
		err(1, "mkdir %s", rootfs);
	start_extractor(rootfs);
	fetch_layers();
	/* the extractor has said what went wrong, unless it was killed */
	if (waitpid(extractor, &status, 0) < 0 || !WIFEXITED(status))
		errx(1, "%s: unpacking failed", rootfs);
	if (WEXITSTATUS(status))
		exit(1);
	extractor = 0;
	write_config(registry_get(xasprintf("blobs/%s", config), config, NULL), config, &platform);
	write_file(xasprintf("%s/image.txt", out_dir), O_CREAT | O_EXCL,
		   xasprintf("%s\n%s\n", full_name, platform));
}

int main(int argc, char **argv)
{
	static const struct option options[] = { { "help", no_argument, NULL, 'h' },
						 { "quiet", no_argument, NULL, 'q' },
						 { "platform", required_argument, NULL, 'p' },
						 { NULL, 0, NULL, 0 } };
	const char *platform = NULL,
		   *list = getenv("D_PULL_INSECURE") ? getenv("D_PULL_INSECURE") : "", *r;
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
	/* Layer names are bytes. libarchive converts PAX names (UTF-8) to the locale's charset: in
	 * C.UTF-8 that changes nothing, and it never converts the raw bytes of ustar names. */
	if (!setlocale(LC_CTYPE, "C.UTF-8"))
		errx(1, "setlocale C.UTF-8: the locale is missing");
	parse_ref(argv[optind]);
	r = ref.registry;
	parse_platform(platform);
	out_dir = argv[optind + 1]	   ? argv[optind + 1]
		  : strrchr(ref.repo, '/') ? strrchr(ref.repo, '/') + 1
					   : ref.repo;
	rootless = getuid() != 0;
	/* loopback names and addresses, with or without a port (strchr(":", c) is true for ':' and
	 * '\0') */
	insecure = (!strncmp(r, "localhost", 9) && strchr(":", r[9])) ||
		   (!strncmp(r, "[::1]", 5) && strchr(":", r[5])) ||
		   (!strncmp(r, "127.", 4) && !r[strspn(r, "0123456789.:")]) ||
		   strstr(xasprintf(",%s,", list), xasprintf(",%s,", r));
	if (mkdir(out_dir, 0755))
		errx(1, "%s: %s", out_dir, errno == EEXIST ? "already exists" : strerror(errno));
	parent = getpid();
	atexit(cleanup);
	open_cache();
	load_credentials();
	pull();
	prune_cache();
	done = 1;
	if (!quiet)
		warnx("pulled into %s", out_dir);
	return 0;
}
