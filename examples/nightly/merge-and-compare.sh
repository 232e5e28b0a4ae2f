#!/usr/bin/env bash
# The nightly job's last step, runnable anywhere: merge the shards' bundles into one,
# then compare it with the previous night's merged bundle (when there is one).
#
#   merge-and-compare.sh COLDBOOT SHARDS_DIR PREVIOUS_DIR OUT_DIR
#
# SHARDS_DIR holds one bundle folder per shard (shard-1, shard-2, ...). PREVIOUS_DIR is
# the previous night's OUT_DIR, or a path that does not exist on the first night.
# Exit: 0 when every pair ran and nothing regressed; 1 when a shard's pairs are missing
# or something regressed (both are reported in OUT_DIR); 2 or 3 on bad input or an
# infrastructure error, as coldboot's own exit codes.
set -uo pipefail
coldboot=$1 shards=$2 previous=$3 out=$4

shopt -s nullglob
bundles=("$shards"/*/)
if [ ${#bundles[@]} -eq 0 ]; then
    echo "no shard bundles under $shards" >&2
    exit 2
fi

"$coldboot" report "${bundles[@]}" --into "$out"
merged=$?
if [ $merged -ge 2 ]; then
    exit $merged
fi

compared=0
if [ -d "$previous" ]; then
    "$coldboot" compare "$previous" "$out"
    compared=$?
    if [ $compared -ge 2 ]; then
        exit $compared
    fi
else
    echo "no previous bundle at $previous: nothing to compare with (first night)" >&2
fi

# A merge without every pair (1) and a regression (1) both fail the job.
if [ $merged -ne 0 ] || [ $compared -ne 0 ]; then
    exit 1
fi
exit 0
