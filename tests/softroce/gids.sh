# GID-table helpers of the soft-RoCE guest scripts (tests/softroce/session.sh and
# benchmarks/softroce/pair.sh source this): builtins only, every fork counts under TCG.
ZERO_GID=0000:0000:0000:0000:0000:0000:0000:0000

# gid_table DEV: "index gid type netdev" for every non-zero entry of port 1's GID table (the ground truth
# the tests compare rdmacheck's pick with: which index an address lands at is the kernel's choice).
gid_table() {
    local d="/sys/class/infiniband/$1/ports/1" f i g t n
    for f in "$d"/gids/*; do
        i=${f##*/}; g=""; read -r g < "$f" 2>/dev/null
        [ -n "$g" ] && [ "$g" != $ZERO_GID ] || continue
        t=""; n=""; read -r t < "$d/gid_attrs/types/$i" 2>/dev/null; read -r n < "$d/gid_attrs/ndevs/$i" 2>/dev/null
        echo "$i $g ${t// /_} $n"
    done | sort -n
}
# ipv4_gid_index DEV IP: the index of the RoCE v2 GID that carries IP (::ffff:IP), read from the table now.
ipv4_gid_index() {
    local a b c d hex
    IFS=. read -r a b c d <<< "$2"
    hex=$(printf '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' "$a" "$b" "$c" "$d")
    gid_table "$1" | while read -r i g t n; do
        [ "$g" = "$hex" ] && [ "$t" = "RoCE_v2" ] && { echo "$i"; break; }
    done
}
