#!/bin/bash
# golden_check_cli_test: the golden_check binary exits 0 on the reference file and non-zero on a
# corrupted copy (an altered parameter: FAIL, exit 1), a truncated copy (parse error, exit 2),
# a missing file and bad flags (exit 2).
# Also: a golden file the checker has never seen (1-row, 1-column, tall, wide, odd shapes, other
# hyper-parameters, made by golden_make) passes.
# Usage (from the sh_test): golden_check_cli_test.sh GOLDEN_CHECK REFERENCE_FILE GOLDEN_MAKE
set -u
checker="$1"
reference="$2"
maker="$3"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0

expect_status() {  # expect_status WANT DESCRIPTION COMMAND...
  local want="$1" what="$2"
  shift 2
  "$@" >"$tmp/out.txt" 2>&1
  local got=$?
  if [[ "$want" == "nonzero" && "$got" -ne 0 ]] || [[ "$got" == "$want" ]]; then
    echo "ok: $what (exit $got)"
  else
    echo "FAILED: $what: exit $got, expected $want; output:"
    cat "$tmp/out.txt"
    failures=$((failures + 1))
  fi
}

expect_status 0 "reference file passes" "$checker" "$reference"
cat "$tmp/out.txt"
grep -q " PASS" "$tmp/out.txt" || { echo "FAILED: no PASS line"; failures=$((failures + 1)); }

# Corrupt the first value of param_1 of the first case: still well-formed, but the reference's
# update of steps 1 and 2 is now wrong, so that case must FAIL.
awk '!done && $1 == "param_1" { $4 = $4 + 0.01; done = 1 } { print }' "$reference" >"$tmp/corrupt.txt"
if cmp -s "$reference" "$tmp/corrupt.txt"; then
  echo "FAILED: could not corrupt the reference"; failures=$((failures + 1))
fi
expect_status 1 "corrupted parameter fails" "$checker" "$tmp/corrupt.txt"
grep -q "FAIL" "$tmp/out.txt" || { echo "FAILED: no FAIL line"; failures=$((failures + 1)); }

# Truncate: drop the last line ("end").
sed '$d' "$reference" >"$tmp/truncated.txt"
expect_status 2 "truncated file is an error" "$checker" "$tmp/truncated.txt"
grep -q "truncated" "$tmp/out.txt" || { echo "FAILED: no truncation message"; failures=$((failures + 1)); }

expect_status 2 "missing file" "$checker" "$tmp/no_such_file.txt"
expect_status 2 "no file argument" "$checker"
expect_status 2 "bad backend" "$checker" --backend=tpu "$reference"
expect_status 2 "bad ns_dtype" "$checker" --ns_dtype=fp8 "$reference"
expect_status 0 "--tol is accepted" "$checker" --tol=0.5 "$reference"
grep -q "tolerances: update 5.0e-01" "$tmp/out.txt" || { echo "FAILED: --tol not shown"; failures=$((failures + 1)); }

# Unseen shapes and hyper-parameters.
if "$maker" --shapes=1x64,64x1,128x8,8x128,33x17,17x33,1x1 --prefix=shapes >"$tmp/unseen.txt" &&
   "$maker" --shapes=24x40,40x24 --nesterov=false --ns_steps=3 --lr=0.05 --beta1=0.9 \
     --beta2=0.99 --weight_decay=0 --steps=4 --prefix=hyper --seed=2 >>"$tmp/unseen.txt" &&
   "$maker" --kind=adamw --shapes=12x7,1x37 --beta2=0.99 --lr=1e-3 --weight_decay=0.1 \
     --prefix=adamw --seed=3 >>"$tmp/unseen.txt"; then
  expect_status 0 "unseen shapes and hyper-parameters pass" "$checker" "$tmp/unseen.txt"
  cat "$tmp/out.txt"
  [[ "$(grep -c " PASS" "$tmp/out.txt")" -eq 11 ]] || { echo "FAILED: expected 11 PASS lines"; failures=$((failures + 1)); }
else
  echo "FAILED: golden_make"; failures=$((failures + 1))
fi

if [[ "$failures" -ne 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
