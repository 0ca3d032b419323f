# A cuda/ source -> host C++ for the emulated device (tests/emu/device_emu.h):
#   K<<<cfg>>>(args)  ->  sg_emu_cfg(cfg).go("K", K, args)
# K is an identifier with optional template arguments; cfg may span lines (line numbers are kept, and a #line
# directive names the original file). Usage: perl rewrite_launches.pl cuda/linalg.cu > linalg.cpp
my $path = $ARGV[0];
open(my $fh, '<', $path) or die "rewrite_launches.pl: $path: $!\n";
local $/;
$_ = <$fh>;
s{(\b[A-Za-z_]\w*(?:<[^<>;()]*>)?)<<<(.*?)>>>\((\s*\))?}{ "sg_emu_cfg($2).go(\"$1\", $1" . (defined $3 ? ")" : ", ") }gse;
die "rewrite_launches.pl: $path: a launch was not rewritten\n" if /<<</;
print "#line 1 \"$path\"\n", $_;
