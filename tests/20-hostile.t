#!/bin/bash
# SPDX-License-Identifier: MIT
# Hostile layers (tests/hostile.py), pulled as root and unprivileged: nothing outside DIR
# changes, and each attack is refused (exit 1, DIR gone, one line on stderr) or unpacked
# to its safe result. The base layer holds a decoy copy of the victim directory, so
# links and whiteouts resolved inside the rootfs land on the decoy.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

ATTACKS=(dotdot absolute symlink-escape symlink-escape-later hardlink-escape hardlink-missing
	whiteout-escape root-symlink devices setuid mode0000 replace-dir truncated bomb-names lrzip-filter
	whiteout-dotdot)
WHO=(as_root as_user)
plan $((2 + ${#ATTACKS[@]} + 3 * ${#ATTACKS[@]} * ${#WHO[@]}))
# Unprivileged, d-pull unpacks in a user namespace: where as_user cannot make one, its attacks
# are skipped.
NO_USERNS=
can_userns as_user || NO_USERNS="as_user cannot unpack in a user namespace here: $PROBE_ERROR"

# --- the victim: a host directory every attack aims at, writable by the user -------
VICTIM=$T/victim
V=${VICTIM#/} # its name inside a rootfs, where the decoy is
make_victim() {
	rm -rf "$VICTIM"
	mkdir -p "$VICTIM/sub"
	echo "host keepme" >"$VICTIM/keepme"
	echo "host secret" >"$VICTIM/secret"
	echo "host inner" >"$VICTIM/sub/inner"
	chown -R 65534:65534 "$VICTIM"
	chmod 0777 "$VICTIM" "$VICTIM/sub"
	chmod 0666 "$VICTIM/keepme" "$VICTIM/secret" "$VICTIM/sub/inner"
	for h in "$(user_home as_root)" "$(user_home as_user)"; do
		echo "sentinel" >"$h/sentinel"
	done
}

# pwned [FIND-ACTION...]: files named PWNED* where escapes from DIR/rootfs land, at most a few
# levels up (e.g. /tmp/tmp/PWNED-dotdot), but not in the temp dirs of other test runs, which
# are theirs (a test running at the same time may make PWNED files on purpose)
pwned() {
	find / "$T" -maxdepth 1 -name 'PWNED*' "$@" 2>/dev/null
	find /tmp "$(user_home as_root)" "$(user_home as_user)" -maxdepth 3 \
		-path "${T%.*}.*" -not -path "$T" -not -path "$T/*" -prune -o \
		-name 'PWNED*' -not -path '*/rootfs/*' "${@:--print}" 2>/dev/null
}

# host_state: everything the attacks could reach outside DIR
host_state() {
	(cd "$VICTIM" && find . -printf '%p %y %m %u %n\n' | LC_ALL=C sort && cat keepme secret sub/inner)
	cat "$(user_home as_root)/sentinel" "$(user_home as_user)/sentinel"
	stat -c '%n %h' /etc/passwd
	pwned
}

clean_host() {
	pwned -exec rm -rf {} +
	make_victim
}

# show ROOTFS PATH...: one line per path, "; "-joined: "p/ MODE: entries" for a
# directory, "p MODE LINKS: content" for a file, "p -> target", "p absent"
show() {
	local r=$1 p
	shift
	for p in "$@"; do
		if [ -L "$r/$p" ]; then
			echo "$p -> $(readlink "$r/$p")"
		elif [ -d "$r/$p" ]; then
			echo "$p/ $(stat -c %a "$r/$p"): $(find "$r/$p" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | paste -sd ' ')"
		elif [ -f "$r/$p" ]; then
			echo "$p $(stat -c '%a %h' "$r/$p"): $(cat "$r/$p")"
		else
			echo "$p absent"
		fi
	done | paste -sd ';' | sed 's/;/; /g'
}

# outcome WHO RC DIR ERRFILE: "ok", "refused" (exit 1, DIR gone, one line on stderr that
# says something), or what happened instead
outcome() {
	local lines
	lines=$(wc -l <"$4")
	if [ "$2" -eq 0 ] && [ -d "$3/rootfs" ]; then
		echo ok
	elif [ "$2" -eq 1 ] && [ ! -e "$3" ] && [ "$lines" -eq 1 ] && ! grep -q '(null)' "$4"; then
		echo refused
	else
		echo "exit $2, DIR $([ -e "$3" ] && echo kept || echo gone), $lines lines on stderr"
	fi
}

# result ATTACK WHO DIR ERRFILE: the attack's result inside DIR ("refused" when DIR is gone);
# finally removes DIR as WHO with a plain rm -rf, which must work
result() {
	local r=$3/rootfs
	if [ ! -e "$3" ]; then
		echo "refused: $(head -c 300 "$4" | sed -E 's/sha256:[0-9a-f]{64}/sha256:X/g')"
		return
	fi
	case $1 in
	dotdot) show "$r" tmp/PWNED-dotdot PWNED2 PWNED-dotdot ;;
	absolute) show "$r" tmp/PWNED-abs ;;
	symlink-escape | symlink-escape-later) show "$r" x y "$V" "$V/owned" "$V/owned2" ;;
	hardlink-escape)
		show "$r" h h2 s h3 "$V/keepme" "$V/secret"
		[ "$r/h" -ef "$r/$V/secret" ] && [ "$r/h2" -ef "$r/$V/secret" ] && echo "h h2 = $V/secret"
		[ "$r/h3" -ef "$r/$V/keepme" ] && echo "h3 = $V/keepme"
		;;
	whiteout-escape) show "$r" x y "$V" "$V/sub" ;;
	devices) show "$r" dev && echo "device warnings: $(grep -c 'device' "$4")" ;;
	setuid) show "$r" bin/suid bin/sgid shared ;;
	mode0000) show "$r" locked ro ro/sub && cat "$r/locked/f" "$r/ro/f" "$r/ro/sub/g" ;;
	replace-dir) show "$r" d ;;
	whiteout-dotdot)
		show "$r" . a a/keep etc etc/os-release
		echo "named .wh.*: $(find "$r" -name '.wh.*' | wc -l)"
		;;
	bomb-names)
		echo "deep: $(find "$r" -name deep | wc -l), long: $(find "$r" -name 'mmm*' | wc -l)," \
			"warnings naming it: $(grep -c "mmmmmmmmmm" "$4")"
		;;
	*) show "$r" . ;;
	esac
	"$2" rm -rf "$3" && [ ! -e "$3" ] && echo "rm -rf DIR as $2 works"
}

# is_one_of DESC GOT ALTERNATIVE...
is_one_of() {
	local desc=$1 got=$2 alt
	shift 2
	for alt in "$@"; do
		if [ "$got" = "$alt" ]; then
			is "$desc" "$got" "$alt"
			return
		fi
	done
	is "$desc" "$got" "$1"
	[ $# -gt 1 ] && diag "or any of:" "${@:2}"
	return 1
}

# expected WHO ATTACK: NUL-terminated, the outcome regex, then the acceptable results;
# an alternative ending in "*" is a prefix.
expected() {
	local rm="rm -rf DIR as $1 works" refused="refused: d-pull: sha256:X: "
	case $2 in
	dotdot) # resolved inside the rootfs, or refused
		alt '^(ok|refused)$' "refused*" \
			"tmp/PWNED-dotdot 644 1: pwned; PWNED2 644 1: pwned; PWNED-dotdot absent"$'\n'"$rm"
		;;
	absolute)
		alt '^(ok|refused)$' "refused*" "tmp/PWNED-abs 644 1: pwned"$'\n'"$rm"
		;;
	symlink-escape | symlink-escape-later) # writes land on the decoy
		alt '^(ok|refused)$' "refused*" \
			"x -> $VICTIM; y -> ../../../../../../$V; $V/ 755: keepme owned owned2 secret sub; $V/owned 644 1: owned via x; $V/owned2 644 1: owned via y"$'\n'"$rm"
		;;
	hardlink-escape) # links resolve to the decoy, and their data goes there
		alt '^(ok|refused)$' "refused*" \
			"h 644 3: pwned via h; h2 644 3: pwned via h; s -> $VICTIM; h3 644 2: pwned via h3; $V/keepme 644 2: pwned via h3; $V/secret 644 3: pwned via h"$'\n'"h h2 = $V/secret"$'\n'"h3 = $V/keepme"$'\n'"$rm"
		;;
	whiteout-escape) # whiteouts through a symlink delete on the decoy; docker (a
		# filepath.Walk that does not follow its root) ignores an opaque marker below one
		alt '^(ok|refused)$' "refused*" \
			"x -> $VICTIM; y -> $VICTIM/sub; $V/ 755: secret sub; $V/sub/ 755: "$'\n'"$rm" \
			"x -> $VICTIM; y -> $VICTIM/sub; $V/ 755: secret sub; $V/sub/ 755: inner"$'\n'"$rm"
		;;
	hardlink-missing) alt '^refused$' "refused*" ;; # not complete: not a success
	root-symlink) alt '^refused$' "${refused}the root entry is not a directory" ;;
	devices) alt '^ok$' "dev/ 755: after"$'\n'"device warnings: 2"$'\n'"$rm" ;;
	setuid)
		alt '^ok$' "bin/suid 755 1: #!/bin/sh; bin/sgid 755 1: #!/bin/sh; shared/ 775: f"$'\n'"$rm"
		;;
	mode0000)
		if [ "$1" = as_root ]; then
			alt '^ok$' "locked/ 0: f; ro/ 555: f sub; ro/sub/ 0: g"$'\nin locked\nin ro\nin ro/sub\n'"$rm"
		else # unprivileged, directories get u+rwx
			alt '^ok$' "locked/ 700: f; ro/ 755: f sub; ro/sub/ 700: g"$'\nin locked\nin ro\nin ro/sub\n'"$rm"
		fi
		;;
	replace-dir) alt '^ok$' "d 644 1: d is now a file"$'\n'"$rm" ;;
	truncated) alt '^refused$' "refused*" ;;
	# refused without running the image's lrzip: it would have said so on stderr (a 2nd line)
	lrzip-filter) alt '^refused$' "refused*" ;;
	whiteout-dotdot) # a/.wh.., .wh.., a/.wh. and .wh..wh.plnk remove nothing
		alt '^ok$' "./ 755: a bin etc ${V%%/*}; a/ 755: keep; a/keep 644 1: keep; etc/ 755: os-release; etc/os-release 644 1: ID=hostile"$'\n'"named .wh.*: 0"$'\n'"$rm"
		;;
	bomb-names) # a name the kernel cannot hold: refused, or the entry skipped
		alt '^(ok|refused)$' "refused*" "deep: 1, long: 0, warnings naming it: 1"$'\n'"$rm" \
			"deep: 0, long: 0, warnings naming it: 1"$'\n'"$rm"
		;;
	esac
}
alt() { printf '%s\0' "$@"; }

# --- images ------------------------------------------------------------------
make_victim
BASELINE=$(host_state)
start_registry tls >/dev/null
ok "hostile.py writes ${#ATTACKS[@]} OCI layouts" "$PYTHON" "$SRC/tests/hostile.py" "$T/images" "$VICTIM"
ok "the tls registry runs" test -n "${REG_TLS:-}"
_skopeo_opts --dest- "$REG_TLS"
for a in "${ATTACKS[@]}"; do
	ok "push $a" skopeo copy -q --preserve-digests "${_OPTS[@]}" "oci:$T/images/$a:latest" \
		"docker://$REG_TLS/hostile/$a:latest"
done

# --- attacks -------------------------------------------------------------------
for who in "${WHO[@]}"; do
	if [ "$who" = as_user ] && [ -n "$NO_USERNS" ]; then
		skip_n $((3 * ${#ATTACKS[@]})) "as_user: the attacks" "$NO_USERNS"
		continue
	fi
	for a in "${ATTACKS[@]}"; do
		dir=$(user_home "$who")/$a
		rc=0
		"$who" "$DPULL" -q "$REG_TLS/hostile/$a:latest" "$dir" >"$T/out" 2>"$T/err" </dev/null || rc=$?
		state=$(host_state) # before result removes DIR: a hardlink to a host file shows now
		mapfile -d '' -t exp < <(expected "$who" "$a")
		got=$(outcome "$who" "$rc" "$dir" "$T/err")
		like "$who $a: outcome" "$got" "${exp[0]}" || diag "stderr:" "$(head -c 2000 "$T/err")"
		res=$(result "$a" "$who" "$dir" "$T/err")
		alts=()
		for e in "${exp[@]:1}"; do
			if [ "${e%\*}" != "$e" ] && [ "${res#"${e%\*}"}" != "$res" ]; then
				alts+=("$res") # a prefix ("refused*") that matches
			else
				alts+=("$e")
			fi
		done
		is_one_of "$who $a: result" "$res" "${alts[@]}"
		[ "${#alts[@]}" -gt 1 ] && diag "$who $a: $got: ${res%%$'\n'*}"
		[ "$state" = "$BASELINE" ] && state=$(host_state)
		is "$who $a: nothing outside DIR changed" "$state" "$BASELINE" || clean_host
		[ -e "$dir" ] && { chmod -R u+rwx "$dir"; rm -rf "$dir"; }
	done
done
