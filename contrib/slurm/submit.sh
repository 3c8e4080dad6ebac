#!/usr/bin/env bash
# Submits an `anyedge chaos` or `anyedge sweep` run as a Slurm job array of SHARDS tasks
# and a merge job that runs after them all (whether or not a seed failed).
#
#   contrib/slurm/submit.sh chaos SHARDS OUTDIR FILE --seeds 2000 [chaos options…]
#   contrib/slurm/submit.sh sweep SHARDS OUTDIR FILE --set PATH=A,B … --seeds 20
#
# Prints the two job ids. The merged report is OUTDIR/report.json (a sweep's page is
# OUTDIR/report.html); the merge job's output (OUTDIR/anyedge-merge-JOB.out) has the table
# and any failing seed with the command that replays it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage="usage: submit.sh chaos|sweep SHARDS OUTDIR FILE [options…]"
command=${1:?$usage}
shards=${2:?$usage}
out=${3:?$usage}
file=${4:?$usage}
shift 4
case "$command" in chaos|sweep) ;; *) echo "$usage" >&2; exit 2 ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
html=()
[[ "$command" == sweep ]] && html=(--html "$out/report.html")
array=$(sbatch --parsable --chdir="$out" --array="0-$((shards - 1))" \
    "$here/shard.sbatch" "$command" "$out" "$(realpath "$file")" "$@")
merge=$(sbatch --parsable --chdir="$out" --dependency="afterany:$array" "$here/merge.sbatch" "$out" "${html[@]}")
echo "array $array, merge $merge"
