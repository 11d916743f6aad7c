#!/bin/bash
# issue 26's time goal: one query-only mask at 4,000 queries through ONNX Runtime, the default
# estimator (tracking) against --estimator antithetic, interleaved, twice; both other jobs on
# the machine stopped (SIGSTOP) while it ran
set -u
export GOMP_SPINCOUNT=10000 UPX_DATA_DIR=/work/shared/imagenet-samples
UPX=/work/main/.venv/bin/upx
[ -f lite0.onnx ] || $UPX export-onnx lite0.onnx
for rep in 1 2; do
  for est in tracking antithetic; do
    rm -rf out-$est-$rep
    /usr/bin/time -f "%e" -o wall-$est-$rep.txt $UPX explain sample:tusker --target "African elephant" --onnx lite0.onnx --queries 4000 --estimator $est --no-progress --out out-$est-$rep > stdout-$est-$rep.txt 2>stderr-$est-$rep.txt
  done
done
