#!/usr/bin/env bash
# Create .venv and install saip-bench with pinned versions. Usage: [SAIP_TORCH=cpu|keep|cuda] ./install.sh
# SAIP_TORCH picks the torch:
#   cpu  - the exact CPU wheels of constraints.txt (torch 2.13.0, torchvision 0.28.0; Python 3.11), no CUDA.
#   keep - reuse the CUDA torch (and torchvision) already in $VENV or else in $PYTHON's environment; it is
#          pinned at its installed version, so no step replaces it (a .pth file links $PYTHON's site dir).
#   cuda - torch/torchvision from the index in pyproject's ranges (downloads; PIP_INDEX_URL picks a build).
#   unset - keep when $VENV's or $PYTHON's torch is a CUDA build, else cpu.
# The other packages keep their constraints.txt pins in every mode.
# Idempotent: a rerun with unchanged pins and SAIP_TORCH only checks the stamp.
# SAIP_INSTALL_DRY_RUN=1 prints the plan (commands, files it would write) and changes nothing.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
MODE=${SAIP_TORCH:-auto}
DRY=${SAIP_INSTALL_DRY_RUN:-0}
case "$MODE" in
  auto | cpu | keep | cuda) ;;
  *) echo "install.sh: SAIP_TORCH is cpu, keep or cuda, not '$MODE'" >&2; exit 2 ;;
esac
stamp_source="$( (cat constraints.txt pyproject.toml requirements/*.txt install.sh; echo "SAIP_TORCH=$MODE") |
  sha256sum | cut -c1-16)"
if [ "$DRY" != 1 ] && [ -f "$VENV/.saip-stamp" ] && [ "$(cat "$VENV/.saip-stamp")" = "$stamp_source" ]; then
  echo "install.sh: $VENV is up to date"
  exit 0
fi
run() { if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi; }
write() {  # write FILE TEXT
  if [ "$DRY" = 1 ]; then printf '+ write %s:\n%s\n' "$1" "$2"; else printf '%s\n' "$2" >"$1"; fi
}
# probe PY: "PYVER TORCH CUDA TORCHVISION SITE" ('-' when absent; SITE last, it may hold spaces).
probe() {
  "$1" - <<'EOF' 2>/dev/null || echo "- - - - -"
import os, sys
from importlib.metadata import version
try:
    import torch
    t, c, s = torch.__version__, torch.version.cuda or "-", os.path.dirname(os.path.dirname(torch.__file__))
except Exception:
    t = c = s = "-"
try:
    tv = version("torchvision")
except Exception:
    tv = "-"
print(f"{sys.version_info[0]}.{sys.version_info[1]}", t, c, tv, s)
EOF
}
read -r py_ver py_torch py_cuda py_tv py_site <<<"$(probe "$PYTHON")"
[ "$py_ver" != - ] || { echo "install.sh: cannot run $PYTHON" >&2; exit 1; }
venv_ver=- venv_torch=- venv_cuda=- venv_tv=-
if [ -x "$VENV/bin/python" ]; then
  read -r venv_ver venv_torch venv_cuda venv_tv _ <<<"$(probe "$VENV/bin/python")"
fi
# The CUDA torch to keep: the venv's own first, else $PYTHON's (linked in).
keep_from=""
if [ "$venv_cuda" != - ]; then keep_from=venv; keep_torch=$venv_torch keep_tv=$venv_tv
elif [ "$py_cuda" != - ]; then keep_from=python; keep_torch=$py_torch keep_tv=$py_tv
fi
[ "$MODE" = auto ] && { [ -n "$keep_from" ] && MODE=keep || MODE=cpu; }
[ "$MODE" = keep ] || keep_from=""
if [ "$MODE" = keep ] && [ -z "$keep_from" ]; then
  echo "install.sh: SAIP_TORCH=keep but no CUDA torch in $VENV or $PYTHON" >&2
  exit 1
fi
echo "install.sh: SAIP_TORCH=$MODE${keep_from:+ (torch $keep_torch from $keep_from)}"
if [ "$MODE" = cpu ] && [ "$py_ver" != 3.11 ]; then  # the CPU pins are cp311 wheels
  echo "install.sh: SAIP_TORCH=cpu pins the CPU torch 2.13.0 wheel for Python 3.11 ($PYTHON is $py_ver);" \
    "on a GPU machine see README" >&2
  exit 1
fi
if [ "$keep_from" = python ] && [ "$venv_ver" != - ] && [ "$venv_ver" != "$py_ver" ]; then
  echo "install.sh: $VENV is Python $venv_ver but $PYTHON (with the CUDA torch) is $py_ver; remove $VENV" >&2
  exit 1
fi
[ -d "$VENV" ] || run "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$MODE" = cpu ]; then
  constraints="$PWD/constraints.txt"
else
  # constraints.txt minus its CPU torch pins; keep pins the installed torch/torchvision instead.
  pins="# Written by install.sh (SAIP_TORCH=$MODE): constraints.txt without its CPU torch pins."
  pins+=$'\n'"$(grep -Eiv '^(#|torch==|torchvision==)' constraints.txt)"
  if [ "$MODE" = keep ]; then
    pins+=$'\n'"torch==$keep_torch"
    [ "$keep_tv" = - ] || pins+=$'\n'"torchvision==$keep_tv"
  fi
  constraints="$PWD/$VENV/.saip-constraints.txt"
  [[ "$VENV" = /* ]] && constraints="$VENV/.saip-constraints.txt"
  write "$constraints" "$pins"
fi
export PIP_CONSTRAINT="$constraints"
[ "$DRY" = 1 ] && echo "+ PIP_CONSTRAINT=$constraints"
# A CPU torch left in the venv would shadow the linked one (keep) or satisfy the range (cuda).
if [ "$keep_from" = python ] || [ "$MODE" = cuda ]; then
  [ "$venv_torch" = - ] || [ "$venv_cuda" != - ] || run $PIP uninstall -y -q torch torchvision
fi
pth="$VENV/lib/python$py_ver/site-packages/saip-keep-torch.pth"
if [ "$keep_from" = python ]; then
  write "$pth" "$py_site"
elif [ "$MODE" != keep ] && [ -f "$pth" ]; then
  run rm "$pth"  # an earlier keep's link would still show its torch (cpu / cuda install their own)
fi
# torch first, pinned, so nothing later can pull a CUDA build.
if [ "$MODE" = cpu ]; then run $PIP install -q "torch==2.13.0"; fi
run $PIP install -q -e ".[test]"
# The retrieval paper protocol's CLIP text tower and BPE tokenizer (extra "clip": open_clip); its tests run in CI.
run $PIP install -q -e ".[clip]"
# Pose stack (mmpose + pure-Python mmcv-lite): declared deps include chumpy (broken on 3.11), so --no-deps.
if [ -s requirements/mmpose.txt ]; then
  run $PIP install -q -r requirements/mmpose-deps.txt
  # xtcocotools: its cp311 wheel targets numpy 1.x, so build it from source (cython comes from the deps file).
  run $PIP install -q --no-deps --no-binary xtcocotools --no-build-isolation -r requirements/mmpose.txt
fi
write "$VENV/.saip-stamp" "$stamp_source"
if [ "$DRY" = 1 ]; then echo "install.sh: dry run, nothing changed"; else echo "install.sh: done ($VENV)"; fi
