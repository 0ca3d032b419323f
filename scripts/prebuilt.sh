# Sourced by scripts/gpu-check and scripts/gpu-focus: unpack_prebuilt SRC ROOT unpacks the bundle from
# scripts/gpu-bundle (SRC/bundle.tar.xz, or an unpacked SRC/bin + SRC/lib) into ROOT and puts ROOT/lib
# (and the CUDA toolkit's libraries) on LD_LIBRARY_PATH. Returns 1 with a message when SRC holds neither.
unpack_prebuilt() {
    local src=$1 root=$2
    rm -rf "$root" && mkdir -p "$root"
    if [ -f "$src/bundle.tar.xz" ]; then tar -C "$root" -xJf "$src/bundle.tar.xz" || return 1
    elif [ -d "$src/bin" ]; then cp -r "$src"/. "$root"/
    else echo "PREBUILT=$src holds neither bundle.tar.xz nor bin/ (make it with scripts/gpu-bundle)" >&2; return 1; fi
    export LD_LIBRARY_PATH="$root/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
