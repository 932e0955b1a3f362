#!/bin/sh
# After the files are in place. A first install enables the service but does not start it (the
# default configuration polls no device: configure, then `systemctl start tagpipe`). An upgrade
# restarts it if it was running, so the new binary runs.
# deb postinst: configure [OLD-VERSION] (empty on a first install), abort-*;
# rpm %post: 1 (install) or 2 and more (upgrade).
set -e
case "$1" in
    configure) if [ -z "$2" ]; then action=install; else action=upgrade; fi ;;
    1) action=install ;;
    [2-9]|[1-9][0-9]*) action=upgrade ;;
    *) exit 0 ;;
esac
# Without systemd running (a container, a chroot) there is nothing to tell.
[ -d /run/systemd/system ] || exit 0
systemctl daemon-reload >/dev/null 2>&1 || true
if [ "$action" = install ]; then
    systemctl enable tagpipe.service >/dev/null 2>&1 || true
else
    systemctl try-restart tagpipe.service >/dev/null 2>&1 || true
fi
