# Pieces shared by the libvirt rigs (libvirt.sh for the host's libvirt, libvirt11.sh for
# Debian 13's): result counting and XML quoting. Sourced (bash).

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
note() { echo "---- $*"; }

# xml TEXT: TEXT quoted for an XML attribute or element. The replacements are quoted:
# bash 5.2 reads an unquoted & in one as the matched text.
xml() { local s=$1; s=${s//'&'/'&amp;'}; s=${s//'<'/'&lt;'}; s=${s//'>'/'&gt;'}; s=${s//\'/'&apos;'}; s=${s//'"'/'&quot;'}; printf '%s' "$s"; }
# token: 16 random hex digits, to tell this run's writes from any other's.
token() { od -An -N8 -tx1 /dev/urandom | tr -d ' \n'; }
