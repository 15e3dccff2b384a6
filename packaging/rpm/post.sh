# cerberus-agent %post: tell systemd about the unit. Not enabled nor started:
# edit /etc/cerberus/agent.toml, then `systemctl enable --now cerberus-agent`.
# The state folder is made here, not listed as an asset: cargo-generate-rpm
# 0.21 cannot package an empty folder. (The unit's StateDirectory= would
# make it too.)
install -d -o cerberus -g cerberus -m 0750 /var/lib/cerberus-agent
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
