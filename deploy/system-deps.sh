#!/usr/bin/env bash
# System packages some tests need: chromium (the HTML report opened in a headless browser),
# postgresql (Optuna on a real database), shellcheck (the deploy scripts). Installed with apt-get
# where it is available and allowed; otherwise the tests that need them skip with a reason.
set -u
packages=(chromium postgresql shellcheck)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "system-deps: no apt-get; tests needing ${missing[*]} will skip" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "system-deps: not root and no passwordless sudo; tests needing ${missing[*]} will skip" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || echo "system-deps: could not install ${missing[*]}; tests needing them will skip" >&2
fi
exit 0
