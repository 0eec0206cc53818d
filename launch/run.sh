#!/usr/bin/env bash
# Launch a dler recipe on one machine.
#   GPUs: accelerate launch with launch/accelerate/CONFIG.yaml.
#   --cpu: torchrun with the matching DeepSpeed JSON (zero2/zero3), for tests and laptops
#          (`accelerate launch --cpu` would silently run a single process).
# usage: launch/run.sh [--config ddp|zero2|zero3|zero3_offload|multinode] [--nproc N] [--cpu] RECIPE [recipe args...]
# LAUNCH_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

config=zero2 nproc="" cpu=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config=${2:?--config needs a name}; shift 2 ;;
    --nproc) nproc=${2:?--nproc needs a number}; shift 2 ;;
    --cpu) cpu=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "launch/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || { echo "launch/run.sh: missing RECIPE" >&2; usage >&2; exit 2; }
recipe=$1; shift
[[ -f $recipe ]] || { echo "launch/run.sh: no recipe file $recipe" >&2; exit 2; }
[[ -f $here/accelerate/$config.yaml ]] || {
  echo "launch/run.sh: unknown --config $config; one of: $(cd "$here/accelerate" && ls *.yaml | sed 's/.yaml//' | xargs)" >&2
  exit 2
}
[[ -z $nproc || $nproc =~ ^[1-9][0-9]*$ ]] || { echo "launch/run.sh: --nproc must be a positive integer" >&2; exit 2; }
python=${PYTHON:-python}

if [[ $cpu == 1 ]]; then
  deepspeed=()
  case $config in
    zero2) deepspeed=(--deepspeed "$here/deepspeed/zero2.json") ;;
    zero3|zero3_offload) deepspeed=(--deepspeed "$here/deepspeed/zero3.json") ;;
  esac
  cmd=("$python" -m torch.distributed.run --standalone --nproc_per_node "${nproc:-2}" "$recipe" "$@"
       --use_cpu true --bf16 false ${deepspeed[@]+"${deepspeed[@]}"})
else
  cmd=("$python" -m accelerate.commands.launch --config_file "$here/accelerate/$config.yaml"
       ${nproc:+--num_processes "$nproc"} "$recipe" "$@")
fi
if [[ ${LAUNCH_DRY_RUN:-0} == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
