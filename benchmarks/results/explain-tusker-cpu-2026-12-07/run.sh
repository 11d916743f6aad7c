#!/bin/bash
# interleaved: new default (--amp auto) against float32, the README's tusker command
set -u
export GOMP_SPINCOUNT=10000 UPX_DATA_DIR=/work/shared/imagenet-samples
UPX=/work/main/.venv/bin/upx
for rep in 1 2; do
  for amp in auto fp32; do
    rm -rf out-$amp-$rep
    /usr/bin/time -f "%e" -o wall-$amp-$rep.txt $UPX explain sample:tusker --target "African elephant" --seeds 0 1 2 --out out-$amp-$rep --no-progress --amp $amp > stdout-$amp-$rep.txt 2>stderr-$amp-$rep.txt
  done
done
rm -rf out-prob
/usr/bin/time -f "%e" -o wall-prob.txt $UPX explain sample:tusker --target "African elephant" --seeds 0 1 2 --out out-prob --no-progress --objective prob > stdout-prob.txt 2>stderr-prob.txt
