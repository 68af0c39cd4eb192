#!/bin/bash
# SPDX-License-Identifier: MIT
# make demo: pull a test image from a local TLS registry with d-pull and run it with d-run.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

say() { printf '==> %s\n' "$*"; }

say "making a test CA in $T/ca"
make_ca || exit 1
say "starting docker-registry with TLS"
start_registry tls || exit 1
say "registry at https://$REG_TLS, pushing the busybox test image"
push_fixture busybox "$REG_TLS" || exit 1
say "$DPULL $REG_TLS/busybox $T/box"
"$DPULL" "$REG_TLS/busybox" "$T/box" || exit 1
say "$DRUN $T/box sh -c 'cat /etc/os-release; id'"
"$DRUN" "$T/box" sh -c 'cat /etc/os-release; id' || exit 1
say "stopping the registry"
stop_servers
say "done"
