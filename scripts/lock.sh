#!/usr/bin/env bash
# Regenerate the lock files from the .in files (`make lock`): every package pinned with its
# sha256 hashes, resolved for CPython 3.11 on Linux x86_64 (this machine and the
# python:3.11-slim images).
#
#   requirements/web.in    -> web.lock.txt     web image: no ML framework
#   requirements/worker.in -> worker.lock.txt  worker image: web + model stack (constrained by web)
#   requirements/dev.in    -> dev.lock.txt     make install: worker + test, lint, type-check and
#                                              lock tools (constrained by worker)
#
# Order matters: each lock constrains the next, so a package has one version in all three.
# The top-level requirements.txt only includes worker.lock.txt, so it needs no step of its own.
# Existing pins are kept while the .in files still allow them; UPGRADE=1 moves every pin to the
# newest release the .in files allow.
#
# uv, not pip-compile: pip-compile takes hashes from PyPI's JSON API and downloads and hashes
# every file whose URL it cannot match there; on the machine these locks were first made on no
# URL matched, so it fetched every platform's torch and CUDA wheels (tens of GB). uv reads the
# hashes from the simple index and metadata by range requests. It resolves against PyPI only,
# never pip.conf's local mirrors, so the locks name nothing local; pip still installs from
# those mirrors when a file there has a hash the lock lists.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
UV=${UV:-$VENV/bin/uv}
if [ ! -x "$UV" ]; then
  echo "lock: $UV not found: run make install first (the dev lock installs uv)" >&2
  exit 1
fi

args=(--quiet --generate-hashes --no-config --python-version 3.11
  --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock")
[ "${UPGRADE:-0}" = "1" ] && args+=(--upgrade)

for name in web worker dev; do
  echo "lock: requirements/$name.in -> requirements/$name.lock.txt"
  "$UV" pip compile "${args[@]}" --output-file "requirements/$name.lock.txt" "requirements/$name.in"
done
