#!/usr/bin/env bash
# Verifies the CUDA backend on a GPU machine that has no Go toolchain.
#
#   scripts/gpu-check.sh build   # here: test binaries and sweep into bin/gpu (about 60 MB)
#   scripts/gpu-check.sh run     # there, from the repository root, with bin/gpu carried along
#
# `run` needs the NVIDIA driver, cuBLAS (a pip nvidia-cublas wheel on LD_LIBRARY_PATH will do) and, for
# the same-run PyTorch baseline, python3 with torch ($READSWEEP_PYTHON, default python3). It prints the op
# checks against the CPU kernels on the device, the T5 goldens on the device, a tiny sweep with NVML energy,
# and the t5-base training step against PyTorch (issue 9's shapes) at fp32 with TF32 off and at bf16 against
# torch.autocast(bfloat16).
#
#   scripts/gpu-check.sh rehearse  # here, without a GPU: build, then run on the CPU emulator of CUDA (the
#                                  # current sources' build of it), the peer on the CPU, at t5-tiny shapes
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
	(cd nn && timeout 75 "../$out/nn.test" -test.run 'TestCUDAOnGPU|TestPTXUpToDate|TestSelectBackend|TestCUDAMissingDriver|TestGPUPrecisionIsTheCPUs' -test.v 2>&1 | grep -E '^(=== RUN|--- |\s+---|PASS|FAIL|ok)|GPU:|cuda_test' || true)
	(cd t5 && timeout 60 "../$out/t5.test" -test.run 'TestGolden' -test.v 2>&1 | grep -E -- '--- |GPU|FAIL|ok' || true)
	echo "== a tiny sweep on the GPU (device: auto), with NVML energy"
	tmp=$(mktemp -d)
	"$out/sweep" model new --out "$tmp/tiny-t5" --spiece examples/spiece-tiny.model >/dev/null
	sed -e "s|models/tiny-t5|$tmp/tiny-t5|" -e "s|sqlite:///[^ ]*|sqlite:///$tmp/gpu.db|" -e "s|output_dir: .*|output_dir: $tmp/runs|" examples/tiny.yaml > "$tmp/tiny.yaml"
	timeout "${GPU_CHECK_SWEEP_SECONDS:-90}" "$out/sweep" run "$tmp/tiny.yaml" --only method=lora >/dev/null 2>"$tmp/run.log" || tail -20 "$tmp/run.log"
	study=$("$out/sweep" studies --config "$tmp/tiny.yaml" 2>/dev/null | awk 'NR==2 {print $1}')
	"$out/sweep" show "$study#0" --config "$tmp/tiny.yaml" | grep -E 'device|gpu|energy|backend' || true
	bench=(${GPU_CHECK_BENCH:---size t5-base --batch 96 --src 128 --tgt 4 --steps 3})
	# The first python3 that has torch (a pyenv shim on the PATH may not).
	if [ -z "${READSWEEP_PYTHON:-}" ]; then
		for py in python3 /usr/bin/python3; do
			if "$py" -c 'import torch' 2>/dev/null; then READSWEEP_PYTHON=$py; break; fi
		done
	fi
	for precision in fp32 bf16; do
		echo "== training step (${bench[*]}), $precision products, against PyTorch on the same GPU"
		READSWEEP_PEER_DIR="$out/peers" READSWEEP_PYTHON="${READSWEEP_PYTHON:-python3}" \
			timeout 150 "$out/sweep" bench t5 --backend cuda "${bench[@]}" --precision "$precision" \
			--methods full,lora,read --peer scripts/torch_gpu_peer.py || echo "(bench at $precision: exit $?)"
	done
	;;
rehearse)
	# The emulator library the current sources build (cudatest caches one per source version).
	emu=$(go test -count=1 -run 'TestCUDAMissingDriver$' -v ./nn | sed -n 's/.*CPU emulator library: //p' | head -1)
	[ -n "$emu" ] || { echo "gpu-check: the CPU emulator did not build (go test ./nn)" >&2; exit 1; }
	"$0" build
	READSWEEP_LIBCUDA=$emu READSWEEP_LIBCUBLAS=$emu RS_EMU_MAX_BLOCK=4 READSWEEP_PEER_DEVICE=cpu \
		GPU_CHECK_BENCH="--size t5-tiny --batch 2 --src 8 --tgt 2 --steps 1" GPU_CHECK_SWEEP_SECONDS=300 "$0" run
	;;
*)
	echo "usage: $0 build|run|rehearse" >&2
	exit 2
	;;
esac
