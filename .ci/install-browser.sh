#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the dashboard's browser test (tests/test_dashboard_browser.py).
# Idempotent: does nothing when both are installed. Never downloads a browser build of its own (no `playwright install`,
# no Selenium Manager): the browser comes from the distribution's packages.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) and chromedriver already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else echo "install-browser: run as root (apt-get install chromium chromium-driver)" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null) / $(/usr/bin/chromedriver --version 2>/dev/null | head -c 60)"
