#!/usr/bin/env bash
# Verifies the CUDA backend on a GPU machine that has no Go toolchain.
#
#   scripts/gpu-check.sh build   # here: test binaries and sweep into bin/gpu (about 60 MB)
#   scripts/gpu-check.sh run     # there, from the repository root, with bin/gpu carried along
#
# `run` needs the NVIDIA driver, cuBLAS (a pip nvidia-cublas wheel on LD_LIBRARY_PATH will do) and, for
# the same-run PyTorch baseline, python3 with torch ($READSWEEP_PYTHON, default python3). It prints the op
# checks against the CPU kernels on the device, the T5 goldens on the device, a tiny sweep with NVML energy,
# and the t5-base training step against PyTorch (issue 9's shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
out=bin/gpu

case "${1:-}" in
build)
	mkdir -p "$out/peers"
	# OpenBLAS and CUDA are both opened at run time, so the binaries need only glibc ≥ 2.34 and the driver.
	flags=(-ldflags=-s\ -w)
	go test -c "${flags[@]}" -o "$out/nn.test" ./nn
	go test -c "${flags[@]}" -o "$out/t5.test" ./t5
	go build "${flags[@]}" -o "$out/sweep" ./cmd/sweep
	# The PyTorch peer's model.
	cp scripts/peers/torch_t5.py "$out/peers/"
	git rev-parse HEAD >"$out/COMMIT" 2>/dev/null || true
	du -sh "$out"
	;;
run)
	# Everything measured goes to one report (on the device machine, $OUT comes back), each part time-boxed
	# so that the whole run stays under 8 minutes.
	report="${OUT:-$out}/gpu-check.txt"
	mkdir -p "$(dirname "$report")"
	exec > >(tee "$report") 2>&1
	echo "gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ), build $(cat "$out/COMMIT" 2>/dev/null || echo unknown)"
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
	echo "== op checks and goldens on the GPU"
	(cd nn && timeout 90 "../$out/nn.test" -test.run 'TestCUDAOnGPU|TestPTXUpToDate|TestSelectBackend|TestCUDAMissingDriver' -test.v 2>&1 | grep -E '^(=== RUN|--- |\s+---|PASS|FAIL|ok)|GPU:|cuda_test' || true)
	(cd t5 && timeout 60 "../$out/t5.test" -test.run 'TestGolden' -test.v 2>&1 | grep -E -- '--- |GPU|FAIL|ok' || true)
	echo "== a tiny sweep on the GPU (device: auto), with NVML energy"
	tmp=$(mktemp -d)
	"$out/sweep" model new --out "$tmp/tiny-t5" --spiece examples/spiece-tiny.model >/dev/null
	sed -e "s|models/tiny-t5|$tmp/tiny-t5|" -e "s|sqlite:///[^ ]*|sqlite:///$tmp/gpu.db|" -e "s|output_dir: .*|output_dir: $tmp/runs|" examples/tiny.yaml > "$tmp/tiny.yaml"
	timeout 120 "$out/sweep" run "$tmp/tiny.yaml" --only method=lora >/dev/null 2>"$tmp/run.log" || tail -20 "$tmp/run.log"
	study=$("$out/sweep" studies --config "$tmp/tiny.yaml" 2>/dev/null | awk 'NR==2 {print $1}')
	"$out/sweep" show "$study#0" --config "$tmp/tiny.yaml" | grep -E 'device|gpu|energy|backend' || true
	echo "== t5-base training step, batch 96 × 128 × 4, against PyTorch on the same GPU"
	READSWEEP_PEER_DIR="$out/peers" READSWEEP_PYTHON="${READSWEEP_PYTHON:-python3}" \
		timeout 200 "$out/sweep" bench t5 --backend cuda --size t5-base --batch 96 --src 128 --tgt 4 --steps 5 \
		--methods full,lora,read --peer scripts/torch_gpu_peer.py
	;;
*)
	echo "usage: $0 build|run" >&2
	exit 2
	;;
esac
