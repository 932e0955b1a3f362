#!/bin/sh
# Before the files are unpacked: the tagpipe user and group must exist, so that the
# configuration (root:tagpipe 0640, it may hold passwords) and /var/lib/tagpipe get their owner.
# deb preinst: install|upgrade|abort-upgrade; rpm %pre: 1 (install) or 2 (upgrade). Safe to repeat.
set -e
if ! getent group tagpipe >/dev/null; then
    groupadd --system tagpipe
fi
if ! getent passwd tagpipe >/dev/null; then
    useradd --system --gid tagpipe --home-dir /var/lib/tagpipe --no-create-home \
        --shell /usr/sbin/nologin --comment "tagpipe agent" tagpipe
fi
