# cerberus-agent %preun: on removal ($1 = 0), not on upgrade, stop and
# disable the service. Configuration, checkpoints and the user stay.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now cerberus-agent.service >/dev/null 2>&1 || :
fi
exit 0
