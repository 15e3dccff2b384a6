# cerberus-agent %pre: the service user, before its files are installed
# with it as their owner. On RHEL-family systems nginx's logs are readable
# by root only: README.md ("Install on a server") gives the setfacl line.
getent group cerberus >/dev/null || groupadd -r cerberus
getent passwd cerberus >/dev/null || \
    useradd -r -g cerberus -d /var/lib/cerberus-agent -s /sbin/nologin \
        -c "cerberus-agent" cerberus
exit 0
