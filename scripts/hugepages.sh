#!/usr/bin/env bash
# Reserve 2 MiB hugepages for DPDK and mount hugetlbfs at /dev/hugepages.
#
#   scripts/hugepages.sh [PAGES]     reserve PAGES (default 512 = 1 GiB), mount
#   scripts/hugepages.sh --release   give the pages back (nr_hugepages = 0)
#
# Idempotent: asking for what is already there changes nothing. Needs root.
# Without hugepages, DPDK still runs with `--no-huge -m 512` (about 3x slower
# on a synthetic rx loop), which is what the tests use.
set -euo pipefail

MOUNT=/dev/hugepages
NR=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages

usage() {
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

[[ -w $NR ]] || { echo "hugepages: cannot write $NR (need root, and a kernel with 2 MiB hugepages)" >&2; exit 1; }

if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage 0; fi

if [[ ${1:-} == --release ]]; then
	before=$(cat "$NR")
	# DPDK leaves its rtemap_* files behind after exit unless run with
	# --huge-unlink; they pin their pages, so remove the stale ones first.
	if mountpoint -q "$MOUNT"; then
		find "$MOUNT" -maxdepth 1 -name '*map_*' -type f -delete 2>/dev/null || true
	fi
	echo 0 >"$NR"
	left=$(cat "$NR")
	echo "hugepages: released $before -> $left pages of 2 MiB"
	if ((left > 0)); then
		echo "hugepages: $left pages still in use (a running DPDK process?)" >&2
	fi
	# The mount is left alone: other programs may rely on it, and an empty
	# hugetlbfs costs nothing.
	exit 0
fi

want=${1:-512}
[[ $want =~ ^[0-9]+$ ]] || { echo "hugepages: PAGES must be a number, got '$want'" >&2; usage 2; }

have=$(cat "$NR")
if ((have >= want)); then
	echo "hugepages: $have pages of 2 MiB already reserved (wanted $want), unchanged"
else
	echo "$want" >"$NR"
	got=$(cat "$NR")
	if ((got < want)); then
		# The kernel reserves what contiguous memory allows; say so rather than fail.
		echo "hugepages: asked for $want pages, kernel gave $got (memory fragmented? try earlier or at boot)" >&2
	else
		echo "hugepages: reserved $got pages of 2 MiB (was $have)"
	fi
fi

if mountpoint -q "$MOUNT" && [[ $(stat -f -c %T "$MOUNT") == hugetlbfs ]]; then
	echo "hugepages: hugetlbfs already mounted at $MOUNT"
else
	mkdir -p "$MOUNT"
	mount -t hugetlbfs -o pagesize=2M nodev "$MOUNT"
	echo "hugepages: mounted hugetlbfs at $MOUNT"
fi
