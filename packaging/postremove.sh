#!/bin/sh
# After the files went. On removal systemd forgets the unit; a deb purge also deletes the state
# (disk buffers, certificates, dedup state) in /var/lib/tagpipe and the logs in /var/log/tagpipe.
# The tagpipe user and group stay: files elsewhere may still belong to them.
# deb postrm: remove|purge|upgrade|failed-upgrade|abort-*|disappear; rpm %postun: 0 (erase) or 1.
set -e
if [ "$1" = remove ] || [ "$1" = purge ] || [ "$1" = 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
fi
if [ "$1" = purge ]; then
    rm -rf /var/lib/tagpipe /var/log/tagpipe
fi
