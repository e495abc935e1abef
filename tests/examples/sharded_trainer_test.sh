#!/bin/bash
# The C trainer example runs at several world sizes and ends with the same parameters (its
# checksum sums the ranks' rows in another order, so compare to 1e-12 relative).
set -euo pipefail
bin="$1"
ref=$("$bin" 1 5 | awk '{print $NF}')
for world in 2 3 4 7; do
  got=$("$bin" "$world" 5 | awk '{print $NF}')
  awk -v a="$ref" -v b="$got" 'BEGIN { d = a - b; if (d < 0) d = -d; s = a < 0 ? -a : a;
       exit !(d <= 1e-12 * s) }' || { echo "world $world: checksum $got vs $ref"; exit 1; }
done
if "$bin" 0 2>/dev/null; then echo "world 0 accepted"; exit 1; fi
echo "sharded_trainer OK ($ref)"
