#!/usr/bin/env bash
# Reproduce the foundation figures: Table 1 / Fig. 2, Eq. 8 scaling, and the block benchmark.
set -euo pipefail
out=${1:-outputs}
mgic=${MGIC_GEO:-mgic-geo}
$mgic experiment reconstruction --out "$out/reconstruction"
$mgic experiment scaling --out "$out/scaling"
$mgic bench grouped --out "$out/bench"
$mgic bench block --out "$out/bench"
