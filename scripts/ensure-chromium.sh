#!/usr/bin/env bash
# The MLflow UI test drives Debian's Chromium through Playwright (Playwright's own browser
# download is not used). Installs it with apt-get when missing and we are root; otherwise says how.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "The UI test needs Chromium: sudo apt-get install chromium" >&2
  exit 1
fi
