#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the browser test (tests/ui). Needs root and Debian's
# package servers; when neither is available the browser test is skipped and says why.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "browser: chromium/chromedriver missing and cannot apt-get install them here" >&2
  exit 0
fi
echo "browser: installing Debian's chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null \
  || echo "browser: apt-get install failed; the browser test will be skipped" >&2
exit 0
