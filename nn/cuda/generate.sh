#!/bin/sh
# Compiles each kernel family to PTX for compute_70 (Volta) and newer; the
# driver JIT-compiles it for the GPU at hand. Run by `go generate ./nn`
# with nvcc on the PATH: scripts/install-nvcc.sh installs Debian's
# nvidia-cuda-toolkit 11.8 (contrib/non-free), which made the committed PTX.
set -eu
if ! command -v nvcc >/dev/null 2>&1; then
	echo "go generate ./nn needs nvcc: run scripts/install-nvcc.sh as root" >&2
	exit 1
fi
cd "$(dirname "$0")"
for f in *.cu; do
	nvcc -ptx -arch=compute_70 -O3 "$f" -o "${f%.cu}.ptx.tmp"
	# nvcc stamps no date or path into PTX, so regenerating is byte-stable.
	mv "${f%.cu}.ptx.tmp" "${f%.cu}.ptx"
done
# What the PTX was built from; TestPTXUpToDate fails when a source changes
# without regenerating.
sha256sum *.cuh *.cu > sources.sha256
