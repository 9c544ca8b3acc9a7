#!/usr/bin/env bash
# The compiled exact dot products (shared/search/lane_dots.c -> shared/search/_lane_dots.so).
# Without them everything still runs and answers the same, bit for bit, through NumPy: the
# workers' exact re-rank is then several times slower (shared/search/dots.py).
set -euo pipefail
cd "$(dirname "$0")/.."
CC="${CC:-gcc}"
src=shared/search/lane_dots.c
out=shared/search/_lane_dots.so
# No -ffast-math: the lanes' order of additions is the result's definition.
"$CC" -O3 -fPIC -shared -fno-fast-math -ffp-contract=fast -o "$out.tmp" "$src"
mv "$out.tmp" "$out"
echo "native: built $out"
