#!/usr/bin/env bash
# browser-setup.sh - Chromium and ChromeDriver for the browser tests
# (crates/modelyard-server/tests/ui.rs), from the Debian packages `chromium`
# and `chromium-driver`. Idempotent: installs only when /usr/bin/chromedriver
# is missing (non-interactive; `apt-get update` only if the first install
# attempt fails), then prints both versions.
#
#   scripts/browser-setup.sh
set -euo pipefail

say() { printf '\033[1m[browser-setup]\033[0m %s\n' "$*" >&2; }

if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; }
    say "installing chromium and chromium-driver (apt-get)"
    if ! apt_install >/dev/null; then
        say "install failed; running apt-get update and retrying"
        $SUDO apt-get update -qq
        apt_install >/dev/null
    fi
fi

/usr/bin/chromium --version 2>/dev/null
/usr/bin/chromedriver --version
