#!/bin/sh
# Installs nvcc for `go generate ./nn` (which regenerates nn/cuda/*.ptx):
# Debian 12's nvidia-cuda-toolkit 11.8, the version that made the committed
# PTX, from the contrib and non-free components. Needs root; about 3 GB.
# Building and running the sweep never need it: the PTX is committed.
set -eu
if command -v nvcc >/dev/null 2>&1; then
	nvcc --version | tail -1
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-nvcc.sh: run as root (apt-get)" >&2
	exit 1
fi
# Debian 12 keeps its sources in deb822 form; older installs in sources.list.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
	sed -i 's/^Components: main$/Components: main contrib non-free/' /etc/apt/sources.list.d/debian.sources
elif [ -f /etc/apt/sources.list ]; then
	sed -i -E '/^deb .* main$/ s/ main$/ main contrib non-free/' /etc/apt/sources.list
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nvidia-cuda-toolkit
nvcc --version | tail -1
