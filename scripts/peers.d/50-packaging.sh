# packaging/ (issue 10): `rpm -qp` reads the built .rpm files; systemd-analyze (in Debian's
# systemd package) verifies the installed unit and runs man(1) for its Documentation=man: link
# (man-db). dpkg and runuser (util-linux) are on every Debian machine already.
apt_need rpm
command -v systemd-analyze >/dev/null || apt_need systemd
command -v man >/dev/null || apt_need man-db
