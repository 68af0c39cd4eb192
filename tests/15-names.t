#!/bin/bash
# SPDX-License-Identifier: MIT
# Names in layers are bytes (issue 7): PAX (UTF-8) names as Go's archive/tar writes them, and
# raw Latin-1 bytes in GNU and ustar headers, come out byte-exact, as `umoci unpack` writes
# them, whatever the caller's locale; as root and unprivileged. The images are made at test
# time by tests/names.py (see there); the listings compare names, types, link targets,
# hardlinks (same inode) and contents, every byte hex-escaped.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

WHO=(as_root as_user)
LOCALES=(unset C POSIX C.UTF-8 en_US.ISO-8859-1)
plan $((5 + ${#LOCALES[@]} * ${#WHO[@]} + 2 * ${#WHO[@]}))

NAMES=("$PYTHON" "$SRC/tests/names.py")

# --- the images and their reference trees ---------------------------------------------------
ok "tests/names.py builds the images (umoci init, new, raw add-layer)" "${NAMES[@]}" build "$T/img"

# reference IMAGE: umoci unpack (as root) of IMAGE, listed in $T/ref-IMAGE; it must be the tree
# the layers describe, so that a umoci that mangled names would not pass for a reference.
reference() {
	umoci unpack --image "$T/img/$1:latest" "$T/umoci-$1" >/dev/null &&
		"${NAMES[@]}" list "$T/umoci-$1/rootfs" >"$T/ref-$1" &&
		"${NAMES[@]}" expect "$1" | diff -u - "$T/ref-$1"
}
ok "umoci unpack of main gives the tree its 4 layers (PAX UTF-8, GNU, ustar, PAX binary) describe" \
	reference main
ok "umoci unpack of nfd (PAX names in NFD next to the same names in NFC) keeps both" reference nfd
ok "umoci unpack of gopax (PAX records with Latin-1 bytes, as Go writes them) keeps the bytes" \
	reference gopax

push_images() {
	local image
	start_registry tls || return 1
	for image in main nfd gopax; do
		skopeo copy -q --preserve-digests --dest-cert-dir "$T/ca/certdir" "oci:$T/img/$image:latest" \
			"docker://$REG_TLS/names-$image:latest" </dev/null || return 1
	done
}
REG_TLS=127.0.0.1:1
ok "start a registry and push the three images" push_images

# --- the caller's locales ----------------------------------------------------------------------
# in_locale LOCALE WHO CMD...: CMD as WHO with LANG, LC_ALL and LC_CTYPE all set to LOCALE, or
# with no locale variable at all for "unset". en_US.ISO-8859-1 is made in $T/locale (LOCPATH).
in_locale() {
	local loc=$1 who=$2 v vars=(-u LANG -u LANGUAGE -u LOCPATH)
	shift 2
	for v in $(compgen -e); do
		[[ $v == LC_* ]] && vars+=(-u "$v")
	done
	[ "$loc" = unset ] || vars+=("LANG=$loc" "LC_ALL=$loc" "LC_CTYPE=$loc")
	[ "$loc" = en_US.ISO-8859-1 ] && vars+=("LOCPATH=$T/locale")
	"$who" env "${vars[@]}" "$@"
}

# the charset `locale charmap` must report in each locale: proof that the locale is in effect
declare -A CHARMAP=([unset]=ANSI_X3.4-1968 [C]=ANSI_X3.4-1968 [POSIX]=ANSI_X3.4-1968
	[C.UTF-8]=UTF-8 [en_US.ISO-8859-1]=ISO-8859-1)

NO_LATIN1=""
mkdir -p "$T/locale"
if ! localedef -i en_US -f ISO-8859-1 "$T/locale/en_US.ISO-8859-1" >"$T/localedef.log" 2>&1 &&
	[ ! -d "$T/locale/en_US.ISO-8859-1" ]; then
	NO_LATIN1="localedef -i en_US -f ISO-8859-1 failed: $(head -1 "$T/localedef.log")"
else
	chmod -R a+rX "$T/locale"
	for who in "${WHO[@]}"; do
		got=$(in_locale en_US.ISO-8859-1 "$who" locale charmap 2>&1)
		[ "$got" = ISO-8859-1 ] && continue
		NO_LATIN1="en_US.ISO-8859-1 made in \$T/locale is not in effect for $who: locale charmap says $got"
	done
fi

# pull_names IMAGE LOCALE WHO: d-pull IMAGE as WHO in LOCALE; the rootfs must list as umoci's,
# and d-pull must say nothing (-q: a warning would be a name it could not convert).
pull_names() {
	local image=$1 loc=$2 who=$3 home dir charmap
	home=$(user_home "$who")
	dir=$home/$image-$loc
	charmap=$(in_locale "$loc" "$who" locale charmap 2>&1)
	if [ "$charmap" != "${CHARMAP[$loc]}" ]; then
		echo "the locale is not in effect: locale charmap says $charmap, want ${CHARMAP[$loc]}"
		return 1
	fi
	(cd "$home" && in_locale "$loc" "$who" "$DPULL" -q "$REG_TLS/names-$image" "$dir") \
		>"$T/out" 2>"$T/err"
	local st=$?
	if [ "$st" -ne 0 ] || [ -s "$T/err" ]; then
		echo "d-pull exited $st, stderr:"
		cat "$T/err"
		[ "$st" -ne 0 ] && return 1
	fi
	"${NAMES[@]}" list "$dir/rootfs" >"$T/got-$image" || return 1
	diff -u "$T/ref-$image" "$T/got-$image" && [ ! -s "$T/err" ]
}

for loc in "${LOCALES[@]}"; do
	for who in "${WHO[@]}"; do
		desc="$who, caller's locale $loc: every name, link target and hardlink byte-exact as umoci unpack"
		if [ "$loc" = en_US.ISO-8859-1 ] && [ -n "$NO_LATIN1" ]; then
			skip "$desc" "$NO_LATIN1"
			continue
		fi
		ok "$desc" pull_names main "$loc" "$who"
	done
done

# --- names libarchive would rewrite or refuse in a UTF-8 locale --------------------------------
for who in "${WHO[@]}"; do
	ok "$who: PAX names in NFD stay NFD, apart from the same names in NFC" \
		pull_names nfd unset "$who"
	ok "$who: PAX records with Latin-1 bytes (Go's archive/tar, no hdrcharset) give those bytes" \
		pull_names gopax unset "$who"
done
