#!/usr/bin/env bash
# Serve the policy for generation with TRL's vLLM server (training runs with --use_vllm true --vllm_mode server).
# usage: launch/vllm_server.sh MODEL [--tp N] [--dp N] [--port P] [extra `trl vllm-serve` args...]
# LAUNCH_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
model=${1:?usage: launch/vllm_server.sh MODEL [--tp N] [--dp N] [--port P]}; shift
tp=1 dp=1 port=8000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tp) tp=$2; shift 2 ;;
    --dp) dp=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) break ;;
  esac
done
cmd=(trl vllm-serve --model "$model" --tensor_parallel_size "$tp" --data_parallel_size "$dp" --port "$port" "$@")
if [[ ${LAUNCH_DRY_RUN:-0} == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
