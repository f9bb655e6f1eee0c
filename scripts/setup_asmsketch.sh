#!/usr/bin/env bash
# System tools for asmsketch (called by scripts/setup.sh; safe to re-run, never fails the set-up):
#   tier A: LLVM 14 (llc, llvm-mc)        tier B: aarch64/riscv64 cross GCC and qemu-user
# Tests that need a tool that is still missing skip with the reason.
set -uo pipefail
need=()
command -v llc-14 >/dev/null || command -v llc >/dev/null || need+=(llvm-14)
command -v llvm-mc-14 >/dev/null || command -v llvm-mc >/dev/null || need+=(llvm-14)
if [ "${ASMSKETCH_TIER_B:-1}" = "1" ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
  command -v riscv64-linux-gnu-gcc >/dev/null || need+=(gcc-riscv64-linux-gnu)
  command -v qemu-aarch64 >/dev/null && command -v qemu-riscv64 >/dev/null || need+=(qemu-user)
fi
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
    echo "asmsketch: installing ${need[*]} ..."
    (apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${need[@]}" >/dev/null 2>&1; }) \
      || echo "asmsketch: could not install ${need[*]}; its tests will skip"
  else
    echo "asmsketch: missing ${need[*]} (install them as root: apt-get install ${need[*]}); their tests will skip"
  fi
fi
exit 0
