#!/usr/bin/env bash
# Debian packages the test suite drives from outside Python, installed once by `make test`:
#   chromium, chromium-driver  the browser test (tests/ui/test_browser.py)
#   docker-compose (v1.29)      `docker-compose config` validates docker-compose.yml against the
#                               Compose Specification without a Docker engine (tests/deploy)
# Needs root and Debian's package servers. Without them the tests that need a tool are skipped
# and say why; everything else still runs.
set -uo pipefail

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "test tools: ${missing[*]} missing and cannot apt-get install them here" >&2
  exit 0
fi
echo "test tools: installing Debian's ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt-get (a second suite starting on the same fresh machine) holds dpkg's lock for
# minutes: wait for it instead of failing, or which tests run would depend on who came first.
# No recommends: the compose validator needs no Docker engine, the browser no desktop.
wait_lock=(-o DPkg::Lock::Timeout=900)
apt-get "${wait_lock[@]}" update -qq >/dev/null \
  && apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "test tools: apt-get install failed; the tests that need them will be skipped" >&2
exit 0
