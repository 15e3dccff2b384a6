#!/usr/bin/env bash
# Builds the .deb and the .rpm from a clean clone:
#
#     packaging/build.sh
#
# leaves target/packages/cerberus-agent_<version>_<arch>.deb,
# target/packages/cerberus-agent-<version>-1.<arch>.rpm and the container
# image target/packages/cerberus-agent-<version>.oci.tar (packaging/image.sh). Installs the
# packaging tools (cargo-deb, cargo-generate-rpm; versions pinned below)
# into target/packaging-tools when they are missing, builds the release
# binary, and makes the man page and the shell completions from the clap
# definitions (the generate-docs example). What goes where is in
# Cargo.toml's [package.metadata.deb] and [package.metadata.generate-rpm].
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools="$root/target/packaging-tools"
generated="$root/target/packaging"
out="$root/target/packages"

have_tool() { # name version
    [ -x "$tools/bin/$1" ] && "$tools/bin/$1" --version 2>/dev/null | grep -q "$2"
}
install_tool() { # crate version
    echo "packaging: installing $1 $2 into $tools" >&2
    cargo install --quiet --locked --root "$tools" "$1" --version "$2"
}

pids=()
have_tool cargo-deb "$CARGO_DEB_VERSION" || { install_tool cargo-deb "$CARGO_DEB_VERSION" & pids+=($!); }
have_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" || { install_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" & pids+=($!); }

cargo build --release --locked
for pid in "${pids[@]}"; do
    wait "$pid" || { echo "packaging: installing a packaging tool failed" >&2; exit 1; }
done

rm -rf "$generated"
cargo run --quiet --locked --example generate-docs -- "$generated" >/dev/null
gzip -9n "$generated/cerberus-agent.1"

version=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
deb_arch=$(dpkg --print-architecture)
rpm_arch=$(uname -m)
mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.rpm

# --no-build: the binary above is the one packaged (cargo-deb strips it).
"$tools/bin/cargo-deb" --no-build --locked \
    --deb-revision "" \
    --output "$out/cerberus-agent_${version}_${deb_arch}.deb"
strip --strip-unneeded -o "$generated/cerberus-agent" target/release/cerberus-agent
"$tools/bin/cargo-generate-rpm" \
    --payload-compress zstd \
    --output "$out/cerberus-agent-${version}-1.${rpm_arch}.rpm"

# The container image, from the same stripped binary as the .rpm.
packaging/image.sh >/dev/null

ls -l "$out"
