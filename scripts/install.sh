#!/usr/bin/env bash
# Create or refresh the project virtualenv (.venv by default) with everything the project needs.
# Installs requirements/dev.lock.txt (every package pinned, with hashes: `make lock` makes it) in
# pip's hash-checking mode, then builds detectron2, which is outside the lock.
# Re-running is fast: the venv is stamped with a hash of the lock files and this folder's install
# scripts, and nothing is done while the stamp matches: a lock change reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

stamp_hash=$(cat requirements/*.lock.txt pyproject.toml scripts/install.sh \
  scripts/install_detectron2.sh | sha256sum | cut -c1-16)
stamp="$VENV/.installed-$stamp_hash"

# The compiled dot products live in the checkout (ignored by git), not in the venv: built every
# time, so a fresh clone beside an up-to-date venv has them too (a second or so).
bash scripts/build_native.sh

if [ -f "$stamp" ]; then
  echo "install: $VENV is up to date ($stamp_hash)"
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  echo "install: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
echo "install: Python packages (torch, tensorflow, keras, celery, flask, ...)"
# Hash-checking mode: every file must match a hash in the lock, and every dependency must be in
# it (pinned), so an incomplete lock fails here rather than pulling an unpinned package. The lock
# also pins pip itself to 25.0.1: pip 26 refuses to download pb1-detectron2 (its "all" extra
# names a direct URL), which install_detectron2.sh does.
# This machine's pip.conf lists local mirrors that lack most packages; pip warns once per
# package about each, which would bury real errors in the log.
"$VENV/bin/python" -m pip install --quiet --progress-bar off --require-hashes \
  -r requirements/dev.lock.txt 2> >(grep -v "is neither a file nor a directory" >&2)
echo "install: detectron2"
bash scripts/install_detectron2.sh "$VENV/bin/python"
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "install: done in $(( $(date +%s) - start )) s"
