#!/usr/bin/env bash
# Builds the agent's container image without a container daemon:
#
#     packaging/image.sh          (after packaging/build.sh)
#
# leaves target/packages/cerberus-agent-<version>.oci.tar, an OCI archive
# (`skopeo copy oci-archive:… docker://registry/…` pushes it; `podman load`
# and `ctr image import` read it). The image is distroless-style: the
# release binary, the shared libraries it links (from this machine, the
# same the .deb relies on), the CA certificates, /etc/passwd and /etc/group
# naming root and nobody, the bundled patterns, and nothing else: no shell,
# no package manager. Entrypoint /usr/bin/cerberus-agent with
# /etc/cerberus/agent.toml (a ConfigMap in packaging/kubernetes/); state
# in /var/lib/cerberus-agent (a hostPath there). It runs as root with every
# capability dropped but DAC_READ_SEARCH (README, "Run on Kubernetes", says
# why); the DaemonSet sets that, and a read-only root file system.
#
# umoci builds the layers and skopeo writes the archive; both come from
# Debian and are installed here when missing (versions checked below).
set -euo pipefail

UMOCI_VERSION=0.4.7
SKOPEO_VERSION=1.9.3

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out="$root/target/packages"
work="$root/target/image"
binary="$root/target/packaging/cerberus-agent"
[ -x "$binary" ] || { echo "image: $binary is missing: run packaging/build.sh first" >&2; exit 1; }

need=()
umoci --version 2>/dev/null | grep -q "$UMOCI_VERSION" || need+=(umoci)
skopeo --version 2>/dev/null | grep -q "$SKOPEO_VERSION" || need+=(skopeo)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    umoci --version | grep -q "$UMOCI_VERSION" || { echo "image: umoci $UMOCI_VERSION expected, got $(umoci --version)" >&2; exit 1; }
    skopeo --version | grep -q "$SKOPEO_VERSION" || { echo "image: skopeo $SKOPEO_VERSION expected, got $(skopeo --version)" >&2; exit 1; }
fi

version=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
tag="$version"

rm -rf "$work"
mkdir -p "$work" "$out"
umoci init --layout "$work/oci"
umoci new --image "$work/oci:$tag"
umoci unpack --rootless --image "$work/oci:$tag" "$work/bundle"
rootfs="$work/bundle/rootfs"

# The binary and exactly the libraries it links, at the paths it looks
# them up (its interpreter included).
install -D -m 755 "$binary" "$rootfs/usr/bin/cerberus-agent"
ldd "$binary" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | sort -u | while read -r lib; do
    install -D -m 644 "$(readlink -f "$lib")" "$rootfs$lib"
done
chmod 755 "$rootfs"/lib*/ld-linux* 2>/dev/null || true
install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
install -d -m 755 "$rootfs/usr/share/doc/cerberus-agent/patterns" "$rootfs/etc/cerberus/patterns.d"
install -m 644 patterns/*.toml "$rootfs/usr/share/doc/cerberus-agent/patterns/"
install -m 644 packaging/COPYRIGHT "$rootfs/usr/share/doc/cerberus-agent/copyright"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' \
    > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
install -d -m 700 "$rootfs/var/lib/cerberus-agent"
install -d -m 1777 "$rootfs/tmp"

umoci repack --image "$work/oci:$tag" "$work/bundle"
umoci config --image "$work/oci:$tag" \
    --author "cerberus-agent" \
    --config.user 0:0 \
    --config.entrypoint /usr/bin/cerberus-agent \
    --config.cmd --config --config.cmd /etc/cerberus/agent.toml \
    --config.env CERBERUS_STATE_DIR=/var/lib/cerberus-agent \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.exposedports 9478/tcp \
    --config.volume /var/lib/cerberus-agent \
    --config.workingdir / \
    --config.label "org.opencontainers.image.title=cerberus-agent" \
    --config.label "org.opencontainers.image.version=$version"
umoci gc --layout "$work/oci"

archive="$out/cerberus-agent-$version.oci.tar"
rm -f "$archive"
skopeo copy --quiet "oci:$work/oci:$tag" "oci-archive:$archive:cerberus-agent:$version"
ls -l "$archive"
