#!/usr/bin/env bash
# Debian's chromium + chromium-driver for the leaderboard's browser test: Debian ships the two at the same version,
# so nothing is downloaded at test time (Selenium is pointed at /usr/bin/chromedriver). A no-op where both exist.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-browser: no apt-get; install chromium and its chromedriver yourself (the browser test skips without them)"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
chromium --version
