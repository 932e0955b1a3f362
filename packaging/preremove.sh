#!/bin/sh
# Before the files go: on removal only (not on upgrade), stop the service and disable it.
# deb prerm: remove|upgrade|deconfigure|failed-upgrade; rpm %preun: 0 (erase) or 1 (upgrade).
set -e
if [ "$1" = remove ] || [ "$1" = 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now tagpipe.service >/dev/null 2>&1 || true
    fi
fi
