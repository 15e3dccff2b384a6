# cerberus-agent %postun: after an upgrade ($1 >= 1), restart the service
# once if it runs; it resumes from its checkpoints.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart cerberus-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
