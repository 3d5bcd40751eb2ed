#!/usr/bin/env bash
# Runs the README's first command, verbatim, in a fresh clone of this repository with an empty Go build
# cache, as a new user would, and checks which BLAS it used.
#
#   scripts/fresh-machine.sh --hide-openblas   # as root: OpenBLAS's headers and libraries hidden (a machine without it)
#   scripts/fresh-machine.sh                   # with whatever is installed; OpenBLAS is then expected to be used
#
# Hiding works in a private mount namespace (unshare -m) with empty folders bound over Debian's OpenBLAS
# directories, so the machine itself is not changed. Only committed files are cloned.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
hide=0
case "${1:-}" in
--hide-openblas) hide=1 ;;
"") ;;
*)
	echo "usage: $0 [--hide-openblas]" >&2
	exit 2
	;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/readsweep-fresh.XXXXXX")
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/readsweep"
# The first ```sh block of the README is the quickstart; run it exactly as written.
quickstart=$(awk '/^```sh$/ {getline; print; exit}' "$repo/README.md")
[ -n "$quickstart" ] || { echo "fresh-machine: no \`\`\`sh block in README.md" >&2; exit 1; }
echo "fresh-machine: $quickstart"

export GOCACHE="$work/gocache" # nothing from an earlier build may stand in for a compile
log="$work/quickstart.log"
run() { (cd "$work/readsweep" && bash -c "$quickstart") >"$log" 2>&1; }
start=$(date +%s)
if [ $hide = 1 ]; then
	[ "$(id -u)" = 0 ] || { echo "fresh-machine: --hide-openblas needs root (unshare -m)" >&2; exit 2; }
	mkdir "$work/empty"
	export work quickstart log
	unshare -m bash -euo pipefail -c '
		for d in /usr/include/x86_64-linux-gnu/openblas-pthread /usr/lib/x86_64-linux-gnu/openblas-pthread \
			/usr/include/x86_64-linux-gnu/openblas-openmp /usr/lib/x86_64-linux-gnu/openblas-openmp; do
			[ -d "$d" ] && mount --bind "$work/empty" "$d"
		done
		if [ -e /usr/include/x86_64-linux-gnu/cblas.h ] && cat /usr/include/x86_64-linux-gnu/cblas.h >/dev/null 2>&1; then
			echo "fresh-machine: cblas.h is still readable; cannot hide OpenBLAS here" >&2; exit 1
		fi
		(cd "$work/readsweep" && bash -c "$quickstart") >"$log" 2>&1
	' || { tail -30 "$log"; echo "fresh-machine: the README's first command failed" >&2; exit 1; }
	want="gonum pure-Go BLAS"
else
	run || { tail -30 "$log"; echo "fresh-machine: the README's first command failed" >&2; exit 1; }
	want="OpenBLAS"
	ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0' || want="gonum pure-Go BLAS"
fi
grep -q "CPU matrix products: $want" "$log" || {
	tail -30 "$log"
	echo "fresh-machine: expected the run to use $want" >&2
	exit 1
}
grep -E "CPU matrix products|studies at their budget|^lora" "$log" | sed 's/^/fresh-machine: /'
echo "fresh-machine: README's first command passed in $(($(date +%s) - start)) s (OpenBLAS hidden: $([ $hide = 1 ] && echo yes || echo no))"
