# cerberus-agent %pre: the service user, before its files are installed
# with it as their owner. On RHEL-family systems nginx's logs are readable
# by root only: README.md ("Install on a server") gives the setfacl line.
getent group cerberus >/dev/null || groupadd -r cerberus
getent passwd cerberus >/dev/null || \
    useradd -r -g cerberus -d /var/lib/cerberus-agent -s /sbin/nologin \
        -c "cerberus-agent" cerberus
# Servers logging to the systemd journal (--journal-unit): its readers
# are the group systemd-journal.
getent group systemd-journal >/dev/null && usermod -a -G systemd-journal cerberus
exit 0
