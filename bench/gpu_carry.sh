#!/bin/bash
# Reassemble the benchmark's weights bundle (bench/gpu_bundle.py) on a device machine from
# parts carried one per device call, unpack it into /tmp/bench_weights on the last and write
# the float32 MiniLM weights there. The same pattern as .gpu/carry_ort_gpu.sh.
#   Here, once:  .venv/bin/python bench/gpu_bundle.py build    -> .gpu/m0/part00 .gpu/m1/part01
#   Device:      call i carries ".gpu/m$i" and runs `bash bench/gpu_carry.sh $i N SHA256`,
#                calls back to back on the warm machine (it keeps /tmp ~30 s after a call).
set -u
i=$1; N=$2; SHA=${3:-}
T=/tmp/bench_weights.tar; D=/tmp/bench_weights
part=$(ls .gpu/m$i/part* 2>/dev/null | head -n 1)
[ -n "$part" ] || { echo "CARRY: part $i was not carried (.gpu/m$i)"; exit 2; }
if [ "$i" -eq 0 ]; then rm -f "$T" "$T.count"; fi
have=$(cat "$T.count" 2>/dev/null || echo 0)
if [ "$have" != "$i" ]; then
  echo "CARRY: $T holds $have parts, expected $i: this is a fresh machine; start over at 0"; exit 3
fi
cat "$part" >> "$T" && echo $((i + 1)) > "$T.count" && echo "CARRY: appended part $i, now $(stat -c %s "$T") bytes"
if [ "$i" -eq $((N - 1)) ]; then
  [ -z "$SHA" ] || echo "$SHA  $T" | sha256sum -c - || exit 4
  rm -rf "$D" && mkdir -p "$D" && tar -xf "$T" -C "$D" || exit 5
  python3 bench/gpu_bundle.py restore "$D" || exit 6
  rm -f "$T" "$T.count"
  echo "CARRY: weights in $D (PYTHONPATH=$D; bench/gpu_run.sh sets it)"
fi
