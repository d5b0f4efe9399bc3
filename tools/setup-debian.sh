#!/bin/sh
# Installs what Freeze needs on a fresh Debian 12 machine (Debian packages only).
set -eu
PKGS="meson ninja-build pkg-config gcc clang libclang-rt-14-dev
 libdpdk-dev dpdk libdnnl-dev liburing-dev libcmocka-dev libyaml-dev libjansson-dev zlib1g-dev libpcap-dev
 dataset-fashion-mnist python3 python3-numpy python3-torch python3-matplotlib python3-onnx libopenblas0-pthread
 iproute2 ethtool iputils-ping tmux"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
