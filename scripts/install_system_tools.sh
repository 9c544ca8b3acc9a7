#!/usr/bin/env bash
# Debian's docker-compose (v1.29) for tests/deploy: `docker-compose config -q` validates
# docker-compose.yml against the Compose Specification schema and interpolates it without a
# Docker engine. Needs root and Debian's package servers; without them the validation test is
# skipped and says why (the structural checks in the same file still run).
set -uo pipefail
if command -v docker-compose >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "system tools: docker-compose missing and cannot apt-get install it here" >&2
  exit 0
fi
echo "system tools: installing Debian's docker-compose"
export DEBIAN_FRONTEND=noninteractive
# No recommends: the validator needs no Docker engine.
apt-get update -qq >/dev/null \
  && apt-get install -y -qq --no-install-recommends docker-compose >/dev/null \
  || echo "system tools: apt-get install failed; compose validation will be skipped" >&2
exit 0
