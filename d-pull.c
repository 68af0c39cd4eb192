/* SPDX-License-Identifier: MIT */
/* d-pull: fetch an image from a Docker/OCI registry into DIR/rootfs and DIR/config.json.
 * Blobs stream into a content-addressed cache and get their final name there only once their
 * sha256 matches. Layers are unpacked by a child chrooted into the rootfs (in a user namespace
 * when unprivileged), so no name, link or whiteout in a layer can reach the host. */
#define _GNU_SOURCE
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <sched.h>
#include <search.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define MAX_JSON (4 << 20)
#define MAX_TRIES 4
#define MAX_PARALLEL 4L
#define PRUNE_AGE (30 * 24 * 3600)
#define DIGEST_LEN 71 /* "sha256:" and 64 hex digits */

static const char accept_manifests[] = "Accept: "
	"application/vnd.oci.image.index.v1+json, "
	"application/vnd.docker.distribution.manifest.list.v2+json, "
	"application/vnd.oci.image.manifest.v1+json, "
	"application/vnd.docker.distribution.manifest.v2+json";

struct buf {
	char *data;
	size_t len;
};

struct response {
	long status;
	struct buf body;
	char *challenge; /* WWW-Authenticate */
};

struct blob {
	char digest[DIGEST_LEN + 1];
	char *tmp; /* temporary file in the cache while downloading */
	FILE *out;
	EVP_MD_CTX *md;
	struct curl_slist *headers;
	char *challenge;
	curl_off_t bytes;
	int tries, done;
};

static struct {
	char *registry; /* as the user names it; "docker.io" for Docker Hub */
	const char *host; /* where its API is */
	char *repo, *tag, *digest;
} ref;
static struct {
	const char *os, *arch, *variant;
} want;
static char *base_url;    /* scheme://host/v2/repo */
static char *auth_header; /* "Authorization: ..." for the registry, or NULL */
static char *credentials; /* base64 user:password from an auth file */
static int cache_fd = -1, quiet, progress, rootless;
static const char *out_dir;
static char *cache_path;
static int out_created;
static struct blob *blobs;
static int nblobs;
static pid_t extractor;

static void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void info(const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	va_start(ap, fmt);
	fprintf(stderr, progress ? "\r\033[K%s: " : "%s: ", progname);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void usage(int status)
{
	fprintf(status ? stderr : stdout, "usage: d-pull [-h] [-q] [--platform OS/ARCH[/VARIANT]] "
		"[registry/]name[:tag|@digest] [DIR]\n");
	exit(status);
}

static int valid_digest(const char *d)
{
	return strlen(d) == DIGEST_LEN && !strncmp(d, "sha256:", 7) &&
		strspn(d + 7, "0123456789abcdef") == 64;
}

/* Repository components are lowercase alphanumerics joined by separators (distribution's grammar). */
static int valid_repo(const char *r)
{
	const char *c;

	if (!*r || strspn(r, "abcdefghijklmnopqrstuvwxyz0123456789._-/") != strlen(r))
		return 0;
	for (c = r; *c; c++)
		if ((c == r || c[-1] == '/' || c[1] == '/' || !c[1]) && !isalnum((unsigned char)*c))
			return 0;
	return 1;
}

static int valid_tag(const char *t)
{
	size_t n = strlen(t);

	return n && n <= 128 && t[0] != '.' && t[0] != '-' &&
		strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static void parse_ref(const char *arg)
{
	char *s = xstrdup(arg), *p, *slash = strchr(s, '/');

	if ((p = strchr(s, '@'))) {
		*p++ = '\0';
		if (!valid_digest(p))
			die("%s: invalid digest, want sha256: and 64 lowercase hex digits", arg);
		ref.digest = p;
	}
	ref.registry = "docker.io";
	/* As docker: the first component is a registry only if it looks like a host name. */
	if (slash && (memchr(s, '.', slash - s) || memchr(s, ':', slash - s) ||
		      !strncmp(s, "localhost/", 10))) {
		*slash = '\0';
		ref.registry = s;
		s = slash + 1;
	}
	if ((p = strchr(s, ':'))) {
		*p++ = '\0';
		ref.tag = p;
	} else if (!ref.digest) {
		ref.tag = "latest";
	}
	if (!strcmp(ref.registry, "index.docker.io") || !strcmp(ref.registry, "registry-1.docker.io"))
		ref.registry = "docker.io";
	ref.host = ref.registry;
	if (!strcmp(ref.registry, "docker.io")) {
		ref.host = "registry-1.docker.io";
		if (!strchr(s, '/'))
			s = xasprintf("library/%s", s);
	}
	ref.repo = s;
	if (!*ref.registry || strspn(ref.registry, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		"0123456789.-:[]") != strlen(ref.registry))
		die("%s: invalid registry name \"%s\"", arg, ref.registry);
	if (!valid_repo(ref.repo))
		die("%s: invalid repository name \"%s\"", arg, ref.repo);
	if (ref.tag && !valid_tag(ref.tag))
		die("%s: invalid tag \"%s\"", arg, ref.tag);
}

static void parse_platform(const char *arg)
{
	static const char *machines[][3] = {
		{ "x86_64", "amd64", "" }, { "aarch64", "arm64", "" }, { "armv7l", "arm", "v7" },
		{ "armv6l", "arm", "v6" }, { "i686", "386", "" }, { "i386", "386", "" },
	};
	static struct utsname u;
	char *s, *goarm = getenv("GOARM");
	size_t i;

	if (uname(&u))
		die("uname:");
	want.os = getenv("GOOS") ? getenv("GOOS") : "linux";
	want.arch = u.machine;
	want.variant = goarm ? xasprintf("v%s", goarm) : "";
	for (i = 0; i < sizeof(machines) / sizeof(*machines); i++)
		if (!strcmp(u.machine, machines[i][0]))
			want.arch = machines[i][1], want.variant = goarm ? want.variant : machines[i][2];
	if (getenv("GOARCH"))
		want.arch = getenv("GOARCH");
	if (arg) {
		s = xstrdup(arg);
		want.os = strsep(&s, "/");
		want.arch = strsep(&s, "/");
		want.variant = s ? s : "";
		if (!want.arch || !*want.os || !*want.arch || strchr(want.variant, '/'))
			die("--platform %s: want OS/ARCH[/VARIANT]", arg);
	}
	if (!*want.variant && !strcmp(want.arch, "arm"))
		want.variant = "v7";
}

static void hex_digest(const unsigned char *hash, char out[DIGEST_LEN + 1])
{
	int i;

	strcpy(out, "sha256:");
	for (i = 0; i < 32; i++)
		sprintf(out + 7 + 2 * i, "%02x", hash[i]);
}

static void sha256(const void *data, size_t len, char out[DIGEST_LEN + 1])
{
	unsigned char hash[32];

	if (!EVP_Digest(data, len, hash, NULL, EVP_sha256(), NULL))
		die("sha256 failed");
	hex_digest(hash, out);
}

/* The parts of the registry's error messages that a user can act on. */
static _Noreturn void die_http(long status, const char *what)
{
	const char *hint = "unexpected answer";

	if (status == 401 || status == 403)
		hint = "access denied: check the name, or log in with docker login or podman login";
	else if (status == 404)
		hint = "not found: check the name and the tag";
	else if (status == 429)
		hint = "too many requests: wait, or log in for a higher rate limit";
	die("%s/%s: %s: HTTP %ld from %s: %s", ref.registry, ref.repo, what, status, ref.host, hint);
}

static int retryable(CURLcode rc, long status)
{
	return rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_GOT_NOTHING ||
		rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR || rc == CURLE_PARTIAL_FILE ||
		(rc == CURLE_OK && status >= 500);
}

static size_t save_body(char *data, size_t size, size_t n, void *userdata)
{
	struct buf *b = userdata;

	if (b->len + n > MAX_JSON)
		return 0; /* makes curl fail with CURLE_WRITE_ERROR */
	b->data = xrealloc(b->data, b->len + n + 1);
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	(void)size;
	return n;
}

static size_t save_challenge(char *line, size_t size, size_t n, void *userdata)
{
	char **challenge = userdata;
	size_t total = n;

	if (n > 17 && !strncasecmp(line, "WWW-Authenticate:", 17)) {
		free(*challenge);
		line += 17, n -= 17;
		while (n && isspace((unsigned char)*line))
			line++, n--;
		while (n && isspace((unsigned char)line[n - 1]))
			n--;
		*challenge = strndup(line, n);
	}
	(void)size;
	return total;
}

static CURL *new_handle(const char *url, struct curl_slist *headers)
{
	const char *ca = getenv("CURL_CA_BUNDLE") ? getenv("CURL_CA_BUNDLE") : getenv("SSL_CERT_FILE");
	CURL *h = curl_easy_init();

	if (!h)
		die("curl_easy_init failed");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	/* Blobs are often redirected to a CDN: curl sends Authorization only to the first host. */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "d-pull");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
	if (ca)
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	return h;
}

/* One GET into memory: the status, the body (at most MAX_JSON) and any auth challenge. */
static CURLcode fetch(const char *url, const char *accept, const char *auth, struct response *r)
{
	struct curl_slist *headers = NULL;
	CURLcode rc;
	CURL *h;

	free(r->body.data);
	free(r->challenge);
	memset(r, 0, sizeof(*r));
	if (accept)
		headers = curl_slist_append(headers, accept);
	if (auth)
		headers = curl_slist_append(headers, auth);
	h = new_handle(url, headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, save_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, save_challenge);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &r->challenge);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_cleanup(h);
	curl_slist_free_all(headers);
	return rc;
}

/* fetch() with bounded retries and backoff on connection errors and 5xx. */
static void get(const char *url, const char *accept, const char *auth, struct response *r)
{
	CURLcode rc;
	int try;

	for (try = 1; retryable(rc = fetch(url, accept, auth, r), r->status) && try < MAX_TRIES; try++)
		sleep(1 << try);
	if (rc != CURLE_OK)
		die("%s: %s", url, curl_easy_strerror(rc));
}

/* A parameter of a WWW-Authenticate challenge; the order of parameters varies. */
static char *challenge_param(const char *challenge, const char *key)
{
	size_t n = strlen(key);
	const char *p;

	for (p = challenge; (p = strcasestr(p, key)); p += n)
		if (p > challenge && (p[-1] == ' ' || p[-1] == ',') && p[n] == '=') {
			p += n + 1;
			if (*p == '"')
				return strndup(p + 1, strcspn(p + 1, "\""));
			return strndup(p, strcspn(p, ", "));
		}
	return NULL;
}

/* Answers a 401 challenge: Basic with the user's credentials, Bearer with a token for the repo. */
static void authenticate(const char *challenge)
{
	char *realm, *service, *scope, *url, *basic = NULL;
	struct response r = { 0 };
	const char *token;
	cJSON *json;

	if (!challenge)
		die_http(401, "no WWW-Authenticate challenge");
	if (credentials)
		basic = xasprintf("Authorization: Basic %s", credentials);
	if (!strncasecmp(challenge, "Basic", 5)) {
		free(auth_header);
		auth_header = basic;
		return;
	}
	if (strncasecmp(challenge, "Bearer ", 7) || !(realm = challenge_param(challenge, "realm")))
		die("%s: unsupported authentication challenge: %s", ref.host, challenge);
	service = challenge_param(challenge, "service");
	scope = xasprintf("repository:%s:pull", ref.repo);
	url = xasprintf("%s%cservice=%s&scope=%s", realm, strchr(realm, '?') ? '&' : '?',
		service ? curl_easy_escape(NULL, service, 0) : "", curl_easy_escape(NULL, scope, 0));
	get(url, NULL, basic, &r);
	if (r.status != 200)
		die_http(r.status, credentials ? "token request, check the saved credentials" : "token request");
	json = parse_object(r.body.data, realm);
	if (!(token = json_string(json, "token", realm)) && !(token = json_string(json, "access_token", realm)))
		die("%s: no token in the answer", realm);
	free(auth_header);
	auth_header = xasprintf("Authorization: Bearer %s", token);
	cJSON_Delete(json);
	free(r.body.data);
	free(basic);
	free(url);
}

/* GETs base_url/path; a 401 (first request, or an expired token) gets one new authentication. */
static void registry_get(const char *path, const char *accept, struct response *r)
{
	char *url = xasprintf("%s/%s", base_url, path);

	get(url, accept, auth_header, r);
	if (r->status == 401) {
		authenticate(r->challenge);
		get(url, accept, auth_header, r);
	}
	if (r->status != 200)
		die_http(r->status, path);
	free(url);
}

/* Auth files say "host", "https://host/..." or, for Docker Hub, "https://index.docker.io/v1/". */
static int same_registry(const char *key)
{
	const char *k = strstr(key, "://") ? strstr(key, "://") + 3 : key;
	size_t n = strcspn(k, "/");

	if ((n == 15 && !strncmp(k, "index.docker.io", n)) || (n == 20 && !strncmp(k, "registry-1.docker.io", n)))
		k = "docker.io", n = 9;
	return strlen(ref.registry) == n && !strncmp(k, ref.registry, n);
}

static char *find_credentials(const char *file)
{
	char *text = read_file_at(AT_FDCWD, file, MAX_JSON, 0), *found = NULL;
	const cJSON *entry;
	const char *auth;
	cJSON *json;

	if (!text)
		return NULL;
	json = parse_object(text, file);
	cJSON_ArrayForEach(entry, cJSON_GetObjectItemCaseSensitive(json, "auths"))
		if (!found && same_registry(entry->string) && (auth = json_string(entry, "auth", file)))
			found = xstrdup(auth);
	cJSON_Delete(json);
	free(text);
	return found;
}

/* podman's auth.json first, then docker's config.json, as podman reads them. */
static void load_credentials(void)
{
	const char *env;

	if ((env = getenv("REGISTRY_AUTH_FILE")))
		credentials = find_credentials(env);
	if (!credentials && (env = getenv("XDG_RUNTIME_DIR")))
		credentials = find_credentials(xasprintf("%s/containers/auth.json", env));
	if (!credentials && (env = getenv("DOCKER_CONFIG")))
		credentials = find_credentials(xasprintf("%s/config.json", env));
	else if (!credentials && (env = getenv("HOME")))
		credentials = find_credentials(xasprintf("%s/.docker/config.json", env));
}

static int is_insecure(const char *host)
{
	const char *list = getenv("D_PULL_INSECURE"), *p;
	size_t n = strlen(host);

	/* docker too allows plain HTTP to loopback registries */
	if (!strncmp(host, "127.", 4) || !strncmp(host, "[::1]", 5) ||
	    (!strncmp(host, "localhost", 9) && (!host[9] || host[9] == ':')))
		return 1;
	for (p = list; p && (p = strstr(p, host)); p += n)
		if ((p == list || p[-1] == ',') && (!p[n] || p[n] == ','))
			return 1;
	return 0;
}

/* Pings /v2/ as docker does, choosing the scheme and answering any challenge up front. */
static void connect_registry(void)
{
	struct response r = { 0 };
	char *url = xasprintf("https://%s/v2/", ref.host);

	if (is_insecure(ref.registry) && fetch(url, NULL, NULL, &r) != CURLE_OK)
		url = xasprintf("http://%s/v2/", ref.host);
	get(url, NULL, NULL, &r);
	base_url = xasprintf("%s%s", url, ref.repo);
	if (r.status == 401)
		authenticate(r.challenge);
	free(r.body.data);
	free(r.challenge);
}

/* GETs a manifest or index; one asked for by digest must hash to that digest. */
static cJSON *fetch_manifest(const char *reference, char digest[DIGEST_LEN + 1])
{
	struct response r = { 0 };
	char *path = xasprintf("manifests/%s", reference);
	cJSON *json;

	registry_get(path, accept_manifests, &r);
	/* the bytes as served: manifests are not always in canonical JSON */
	sha256(r.body.data, r.body.len, digest);
	if (valid_digest(reference) && strcmp(reference, digest))
		die("%s: manifest digest mismatch, got %s", reference, digest);
	json = parse_object(r.body.data, path);
	free(r.body.data);
	free(r.challenge);
	free(path);
	return json;
}

static const char *platform_name(const cJSON *p, const char *what)
{
	const char *os = json_string(p, "os", what), *arch = json_string(p, "architecture", what);
	const char *variant = json_string(p, "variant", what);

	return xasprintf("%s/%s%s%s", os ? os : "?", arch ? arch : "?", variant ? "/" : "", variant ? variant : "");
}

/* Picks the manifest for the wanted platform from an index; attestations say unknown/unknown. */
static const char *select_platform(const cJSON *index)
{
	const cJSON *m, *p;
	const char *arch, *variant, *digest;
	char *available = "";

	cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(index, "manifests")) {
		p = cJSON_GetObjectItemCaseSensitive(m, "platform");
		arch = json_string(p, "architecture", "index");
		variant = json_string(p, "variant", "index");
		if (!variant)
			variant = arch && !strcmp(arch, "arm64") ? "v8" : "";
		digest = json_string(m, "digest", "index");
		if (!arch || !strcmp(arch, "unknown"))
			continue;
		if (!strcmp(want.os, json_string(p, "os", "index") ? json_string(p, "os", "index") : "") &&
		    !strcmp(want.arch, arch) && (!*want.variant || !strcmp(want.variant, variant))) {
			if (!digest || !valid_digest(digest))
				die("index: invalid digest for %s/%s", want.os, arch);
			return digest;
		}
		available = xasprintf("%s %s", available, platform_name(p, "index"));
	}
	die("%s/%s: no image for %s/%s%s%s; available:%s", ref.registry, ref.repo, want.os, want.arch,
		*want.variant ? "/" : "", want.variant, *available ? available : " none");
}

/* config.json is the config object, minus anything by which an image would grant itself host access. */
static void write_config(const char *text, const char *what, char **platform)
{
	cJSON *json = parse_object(text, what), *config, *volumes, *volume, *next;
	static const char *user_only[] = { "net", "rw" };
	char *path = xasprintf("%s/config.json", out_dir), *out;
	FILE *f;
	size_t i;

	config = cJSON_DetachItemFromObjectCaseSensitive(json, "config");
	if (!cJSON_IsObject(config)) {
		cJSON_Delete(config);
		config = cJSON_CreateObject();
	}
	for (i = 0; i < sizeof(user_only) / sizeof(*user_only); i++)
		if (cJSON_GetObjectItemCaseSensitive(config, user_only[i])) {
			warn("%s: image config sets \"%s\": dropped, only the user can grant it", what, user_only[i]);
			cJSON_DeleteItemFromObjectCaseSensitive(config, user_only[i]);
		}
	volumes = cJSON_GetObjectItemCaseSensitive(config, "Volumes");
	for (volume = cJSON_IsObject(volumes) ? volumes->child : NULL; volume; volume = next) {
		next = volume->next;
		if (volume->string[0] != '/' || strchr(volume->string, ':')) {
			warn("%s: image volume \"%s\" dropped: only the user can bind host paths", what, volume->string);
			cJSON_Delete(cJSON_DetachItemViaPointer(volumes, volume));
		}
	}
	*platform = xstrdup(platform_name(json, what));
	if (!(out = cJSON_Print(config)) || !(f = fopen(path, "wx")) || fprintf(f, "%s\n", out) < 0 || fclose(f))
		die("%s:", path);
	cJSON_Delete(config);
	cJSON_Delete(json);
	free(out);
	free(path);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)ftw;
	if (remove(path) && errno != ENOENT)
		die("remove %s:", path);
	return type == FTW_NS ? -1 : 0;
}

/* rm -rf; the walk never follows symlinks. */
static void remove_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) && errno == ENOENT)
		return;
	if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS))
		die("remove %s:", path);
}

static int compare(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Opaque whiteout: hide what lower layers put below dir, keep what this layer wrote. */
static void clear_lower(const char *dir, void **written)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char *path;

	if (!d && errno == ENOENT)
		return;
	if (!d)
		die("opendir %s:", dir);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		path = strcmp(dir, ".") ? xasprintf("%s/%s", dir, de->d_name) : xstrdup(de->d_name);
		if (!tfind(path, written, compare))
			remove_tree(path);
		else if (de->d_type == DT_DIR)
			clear_lower(path, written);
		free(path);
	}
	closedir(d);
}

/* Whiteouts apply to lower layers only, whatever their place in this layer's tar. */
static void apply_whiteout(char *name, char *base, void **written)
{
	char *dir = base == name ? "." : name, *target;

	if (base != name)
		base[-1] = '\0';
	if (!strcmp(base, ".wh..wh..opq")) {
		clear_lower(dir, written);
		return;
	}
	target = base == name ? xstrdup(base + 4) : xasprintf("%s/%s", dir, base + 4);
	if (!tfind(target, written, compare))
		remove_tree(target);
	free(target);
}

/* "./a/b/", "/a/b" and "a/b" are one name; the root is "". */
static char *normalize(const char *name)
{
	char *s;
	size_t n;

	while (*name == '/' || (name[0] == '.' && (name[1] == '/' || !name[1])))
		name += name[0] == '.' && name[1] == '/' ? 2 : 1;
	s = xstrdup(name);
	for (n = strlen(s); n && s[n - 1] == '/'; n--)
		s[n - 1] = '\0';
	return s;
}

static void copy_data(struct archive *in, struct archive *out, const char *digest)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int r;

	while ((r = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK)
		if (archive_write_data_block(out, buf, len, off) < ARCHIVE_OK)
			die("%s: %s", digest, archive_error_string(out));
	if (r != ARCHIVE_EOF)
		die("%s: %s", digest, archive_error_string(in));
}

/* One tar entry, as docker applies it: whatever stands at its name goes first, unless both are
 * directories; devices are skipped and setuid/setgid bits dropped. */
static void extract_entry(struct archive *in, struct archive *out, struct archive_entry *e,
			  const char *digest, void **written)
{
	static int warned;
	char *name = normalize(archive_entry_pathname(e)), *base = strrchr(name, '/');
	mode_t type = archive_entry_filetype(e), perm = archive_entry_perm(e) & ~(S_ISUID | S_ISGID);
	struct stat st;
	int r;

	base = base ? base + 1 : name;
	if (!strncmp(base, ".wh.", 4)) {
		apply_whiteout(name, base, written);
		free(name);
		return;
	}
	if (type == AE_IFCHR || type == AE_IFBLK) {
		if (!warned++)
			warn("%s: skipping device nodes such as %s", digest, name);
		free(name);
		return;
	}
	if (!*name && type != AE_IFDIR)
		die("%s: the root entry is not a directory", digest);
	/* unprivileged, the user must stay able to write and remove every directory */
	if (type == AE_IFDIR && rootless)
		perm |= 0700;
	archive_entry_set_perm(e, perm);
	if (*name && !lstat(name, &st) && !(S_ISDIR(st.st_mode) && type == AE_IFDIR))
		remove_tree(name);
	archive_entry_set_pathname(e, *name ? name : ".");
	if ((r = archive_write_header(out, e)) < ARCHIVE_WARN)
		die("%s: %s: %s", digest, name, archive_error_string(out));
	if (r == ARCHIVE_WARN)
		warn("%s: %s: %s", digest, name, archive_error_string(out));
	if (archive_entry_size(e) > 0)
		copy_data(in, out, digest);
	if (archive_write_finish_entry(out) < ARCHIVE_WARN)
		die("%s: %s: %s", digest, name, archive_error_string(out));
	if (*(char **)tsearch(name, written, compare) != name)
		free(name);
}

static void extract_layer(const char *digest)
{
	struct archive *in = archive_read_new(), *out = archive_write_disk_new();
	int fd = openat(cache_fd, digest, O_RDONLY | O_CLOEXEC), r;
	struct archive_entry *e;
	void *written = NULL; /* names this layer wrote, for its whiteouts */

	if (fd < 0)
		die("%s:", digest);
	archive_read_support_filter_all(in);
	archive_read_support_format_tar(in);
	archive_read_support_format_empty(in);
	archive_write_disk_set_options(out, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
		(rootless ? 0 : ARCHIVE_EXTRACT_OWNER));
	if (archive_read_open_fd(in, fd, 1 << 16) != ARCHIVE_OK)
		die("%s: %s", digest, archive_error_string(in));
	while ((r = archive_read_next_header(in, &e)) == ARCHIVE_OK)
		extract_entry(in, out, e, digest, &written);
	if (r != ARCHIVE_EOF)
		die("%s: %s", digest, archive_error_string(in));
	if (archive_write_close(out) != ARCHIVE_OK)
		die("%s: %s", digest, archive_error_string(out));
	archive_read_free(in);
	archive_write_free(out);
	tdestroy(written, free);
	close(fd);
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd))
		die("%s:", path);
}

/* Unprivileged, a user namespace that maps only ourselves grants the chroot. */
static void enter_rootfs(const char *rootfs)
{
	uid_t uid = getuid();
	gid_t gid = getgid();

	if (rootless) {
		if (unshare(CLONE_NEWUSER))
			die("unshare user namespace:");
		write_file("/proc/self/setgroups", "deny");
		write_file("/proc/self/uid_map", xasprintf("0 %u 1", uid));
		write_file("/proc/self/gid_map", xasprintf("0 %u 1", gid));
	}
	if (chroot(rootfs) || chdir("/"))
		die("chroot %s:", rootfs);
}

/* The child unpacks layer i when the parent writes its i-th byte, so unpacking overlaps downloads. */
static int start_extractor(const char *rootfs)
{
	char c;
	int p[2], i;

	if (pipe2(p, O_CLOEXEC) || (extractor = fork()) < 0)
		die("fork:");
	if (extractor)
		return close(p[0]), p[1];
	die_hook = NULL;
	close(p[1]);
	enter_rootfs(rootfs);
	umask(022);
	for (i = 0; i < nblobs && read(p[0], &c, 1) == 1; i++)
		extract_layer(blobs[i].digest);
	_exit(i == nblobs ? 0 : 1);
}

static size_t save_blob(char *data, size_t size, size_t n, void *userdata)
{
	struct blob *b = userdata;

	(void)size;
	b->bytes += n;
	if (!EVP_DigestUpdate(b->md, data, n))
		return 0;
	return fwrite(data, 1, n, b->out);
}

/* (Re)starts a download into a fresh temporary file; the digest is computed as it streams. */
static void start_blob(CURLM *multi, struct blob *b)
{
	char *url = xasprintf("%s/blobs/%s", base_url, b->digest);
	CURL *h;
	int fd;

	if (!b->tmp) {
		b->tmp = xasprintf("%s/%s.XXXXXX", cache_path, b->digest);
		if ((fd = mkostemp(b->tmp, O_CLOEXEC)) < 0 || !(b->out = fdopen(fd, "w")))
			die("%s:", b->tmp);
		b->md = EVP_MD_CTX_new();
	}
	if (fflush(b->out) || ftruncate(fileno(b->out), 0) || fseek(b->out, 0, SEEK_SET))
		die("%s:", b->tmp);
	if (!b->md || !EVP_DigestInit_ex(b->md, EVP_sha256(), NULL))
		die("sha256 failed");
	b->bytes = 0;
	b->headers = auth_header ? curl_slist_append(NULL, auth_header) : NULL;
	h = new_handle(url, b->headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, save_blob);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, save_challenge);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &b->challenge);
	curl_easy_setopt(h, CURLOPT_PRIVATE, b);
	curl_multi_add_handle(multi, h);
	free(url);
}

/* A finished transfer: retried, or verified and renamed to its digest in the cache. */
static void finish_blob(CURLM *multi, CURL *h, CURLcode rc)
{
	unsigned char hash[32];
	char got[DIGEST_LEN + 1];
	struct blob *b;
	long status = 0;

	curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&b);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_multi_remove_handle(multi, h);
	curl_easy_cleanup(h);
	curl_slist_free_all(b->headers);
	if (++b->tries < MAX_TRIES && (retryable(rc, status) || (rc == CURLE_OK && status == 401))) {
		if (status == 401) /* the token expired during the pull */
			authenticate(b->challenge);
		else
			sleep(b->tries);
		start_blob(multi, b);
		return;
	}
	if (rc != CURLE_OK)
		die("%s: %s", b->digest, curl_easy_strerror(rc));
	if (status != 200)
		die_http(status, b->digest);
	if (!EVP_DigestFinal_ex(b->md, hash, NULL))
		die("sha256 failed");
	hex_digest(hash, got);
	if (strcmp(got, b->digest))
		die("%s: digest mismatch, got %s", b->digest, got);
	if (fclose(b->out))
		die("%s:", b->tmp);
	b->out = NULL;
	if (renameat(AT_FDCWD, b->tmp, cache_fd, b->digest))
		die("rename %s:", b->tmp);
	free(b->tmp);
	b->tmp = NULL;
	b->done = 1;
	info("%s: downloaded, %.1f MB", b->digest, b->bytes / 1e6);
}

static void show_progress(int next, time_t start)
{
	curl_off_t bytes = 0;
	int i;

	for (i = 0; i < nblobs; i++)
		bytes += blobs[i].bytes;
	fprintf(stderr, "\r\033[K%s: %d of %d layers unpacked, %.1f MB at %.1f MB/s", progname, next, nblobs,
		bytes / 1e6, bytes / 1e6 / (time(NULL) - start + 1));
}

/* Downloads missing layers, at most MAX_PARALLEL at once, and hands each to the extractor as soon
 * as it and all below it are in the cache. */
static void fetch_layers(int notify)
{
	CURLM *multi = curl_multi_init();
	time_t start = time(NULL);
	int next = 0, running, left, status;
	CURLMsg *msg;

	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, MAX_PARALLEL);
	for (int i = 0; i < nblobs; i++) {
		/* touched on use: the cache keeps what was used in the last 30 days */
		if (!utimensat(cache_fd, blobs[i].digest, NULL, 0))
			blobs[i].done = 1;
		else if (errno == ENOENT)
			start_blob(multi, &blobs[i]);
		else
			die("%s:", blobs[i].digest);
	}
	for (;;) {
		for (; next < nblobs && blobs[next].done; next++)
			if (write(notify, "", 1) != 1)
				break;
		if (next == nblobs || waitpid(extractor, &status, WNOHANG))
			break;
		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left)))
			if (msg->msg == CURLMSG_DONE)
				finish_blob(multi, msg->easy_handle, msg->data.result);
		if (progress)
			show_progress(next, start);
		curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
	close(notify);
	curl_multi_cleanup(multi);
}

static void parse_layers(const cJSON *manifest)
{
	const cJSON *layer, *layers = cJSON_GetObjectItemCaseSensitive(manifest, "layers");
	const char *digest;

	if (!cJSON_IsArray(layers))
		die("%s/%s: manifest has no layers (schema 1 manifests are not supported)", ref.registry, ref.repo);
	blobs = xmalloc(cJSON_GetArraySize(layers) * sizeof(*blobs) + 1);
	cJSON_ArrayForEach(layer, layers) {
		digest = json_string(layer, "digest", "manifest");
		if (!digest || !valid_digest(digest))
			die("%s/%s: manifest: invalid layer digest", ref.registry, ref.repo);
		memset(&blobs[nblobs], 0, sizeof(*blobs));
		strcpy(blobs[nblobs++].digest, digest);
	}
}

static void open_cache(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char *path = xdg && *xdg ? xasprintf("%s/d-utils", xdg) : xasprintf("%s/.cache/d-utils", home ? home : "");
	char *p;

	cache_path = path;

	for (p = strchr(path + 1, '/'); ; p = strchr(p + 1, '/')) {
		if (p)
			*p = '\0';
		if (mkdir(path, 0755) && errno != EEXIST)
			die("mkdir %s:", path);
		if (!p)
			break;
		*p = '/';
	}
	if ((cache_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		die("%s:", path);
}

/* Removes what was not used for 30 days; a failure only warns, as the pull itself succeeded. */
static void prune_cache(void)
{
	DIR *d = fdopendir(dup(cache_fd));
	time_t limit = time(NULL) - PRUNE_AGE;
	struct dirent *de;
	struct stat st;

	while (d && (de = readdir(d)))
		if (!fstatat(cache_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) && S_ISREG(st.st_mode) &&
		    st.st_mtime < limit && unlinkat(cache_fd, de->d_name, 0))
			warn("prune cache %s:", de->d_name);
	if (d)
		closedir(d);
}

/* On any error: stop the extractor, drop temporary files and the half-written DIR. */
static void cleanup(void)
{
	int i;

	if (extractor > 0) {
		kill(extractor, SIGKILL);
		waitpid(extractor, NULL, 0);
	}
	for (i = 0; i < nblobs; i++)
		if (blobs[i].tmp)
			unlink(blobs[i].tmp);
	if (out_created)
		remove_tree(out_dir);
}

static void pull(void)
{
	char digest[DIGEST_LEN + 1], config_digest[DIGEST_LEN + 1], *platform, *path, *rootfs;
	const char *reference = ref.digest ? ref.digest : ref.tag, *config;
	struct response r = { 0 };
	cJSON *manifest;
	int notify, status;
	FILE *f;

	connect_registry();
	manifest = fetch_manifest(reference, digest);
	if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(manifest, "manifests"))) {
		reference = xstrdup(select_platform(manifest));
		cJSON_Delete(manifest);
		manifest = fetch_manifest(reference, config_digest);
	}
	config = json_string(cJSON_GetObjectItemCaseSensitive(manifest, "config"), "digest", "manifest");
	if (!config || !valid_digest(config))
		die("%s/%s: manifest: invalid config digest", ref.registry, ref.repo);
	parse_layers(manifest);
	info("pulling %s/%s%s%s@%s into %s", ref.registry, ref.repo, ref.tag ? ":" : "", ref.tag ? ref.tag : "",
		digest, out_dir);
	rootfs = xasprintf("%s/rootfs", out_dir);
	if (mkdir(rootfs, 0755))
		die("mkdir %s:", rootfs);
	notify = start_extractor(rootfs);
	fetch_layers(notify);
	if (waitpid(extractor, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		die("%s: unpacking failed", rootfs);
	extractor = 0;
	path = xasprintf("blobs/%s", config);
	registry_get(path, NULL, &r);
	sha256(r.body.data, r.body.len, config_digest);
	if (strcmp(config, config_digest))
		die("%s: config digest mismatch, got %s", config, config_digest);
	write_config(r.body.data, config, &platform);
	path = xasprintf("%s/image.txt", out_dir);
	if (!(f = fopen(path, "wx")) || fprintf(f, "%s/%s%s%s@%s\n%s\n", ref.registry, ref.repo, ref.tag ? ":" : "",
		ref.tag ? ref.tag : "", digest, platform) < 0 || fclose(f))
		die("%s:", path);
	cJSON_Delete(manifest);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "platform", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	const char *platform = NULL;
	int c;

	progname = "d-pull";
	while ((c = getopt_long(argc, argv, "hq", options, NULL)) != -1)
		if (c == 'h')
			usage(0);
		else if (c == 'q')
			quiet = 1;
		else if (c == 'p')
			platform = optarg;
		else
			usage(2);
	if (argc - optind < 1 || argc - optind > 2)
		usage(2);
	parse_ref(argv[optind]);
	parse_platform(platform);
	out_dir = argv[optind + 1] ? argv[optind + 1] : strrchr(ref.repo, '/') ? strrchr(ref.repo, '/') + 1 : ref.repo;
	rootless = getuid() != 0;
	progress = !quiet && isatty(2);
	signal(SIGPIPE, SIG_IGN);
	if (mkdir(out_dir, 0755))
		die(errno == EEXIST ? "%s: already exists" : "mkdir %s:", out_dir);
	out_created = 1;
	die_hook = cleanup;
	open_cache();
	if (curl_global_init(CURL_GLOBAL_DEFAULT))
		die("curl_global_init failed");
	load_credentials();
	pull();
	prune_cache();
	info("pulled into %s", out_dir);
	return 0;
}
