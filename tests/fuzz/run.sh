#!/bin/sh
# Builds the libFuzzer targets for Postern's pure parsers, replays each
# target's seed corpus, then fuzzes each one briefly.
#
#   sh tests/fuzz/run.sh                 replay + 20 s of fuzzing per target
#   FUZZ_SECONDS=300 sh tests/fuzz/run.sh
#   FUZZ_SECONDS=0 sh tests/fuzz/run.sh  replay the corpus only
#   FUZZ_TARGETS="fuzz_sasl" sh tests/fuzz/run.sh
#
# Binaries go to build/fuzz/; fuzzing works on a temporary copy of the
# corpus, so the repository is never modified. Crash inputs are written to
# build/fuzz/artifacts/. Exits non-zero if a build fails or any target
# crashes, leaks, times out or breaks an invariant.
# Needs clang and the libFuzzer runtime (Debian: clang libclang-rt-14-dev)
# and libcrypto's headers (libssl-dev) for OPENSSL_cleanse.
set -u

cd "$(dirname "$0")/../.." || exit 2
[ -f include/imap_parse.h ] || { echo "run.sh: cannot find the repository root" >&2; exit 2; }

CC=${FUZZ_CC:-clang}
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
TARGETS=${FUZZ_TARGETS:-"fuzz_imap_parse fuzz_sasl fuzz_users fuzz_pop3_parse fuzz_smtp_parse fuzz_smtp_filter fuzz_ldap_filter fuzz_imap_track fuzz_proxyproto"}
OUT=build/fuzz
FLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
-fno-omit-frame-pointer -std=c11 -D_GNU_SOURCE -Iinclude -Wall -Wextra"

case $SECONDS_PER_TARGET in
''|*[!0-9]*) echo "run.sh: FUZZ_SECONDS must be a whole number of seconds" >&2; exit 2 ;;
esac

# Tools first, with a message that says what to install.
if ! command -v "$CC" >/dev/null 2>&1; then
	echo "run.sh: '$CC' not found. Install clang and the libFuzzer runtime:" >&2
	echo "    apt-get install -y clang libclang-rt-14-dev" >&2
	exit 2
fi
mkdir -p "$OUT/artifacts" || exit 2
probe="$OUT/.probe"
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
	'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
	'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
	>"$probe.c"
if ! "$CC" -fsanitize=fuzzer,address,undefined -o "$probe" "$probe.c" >"$probe.log" 2>&1; then
	echo "run.sh: '$CC' cannot build a libFuzzer target (is the fuzzer/sanitizer runtime installed?):" >&2
	sed 's/^/    /' "$probe.log" >&2
	echo "  Install it with: apt-get install -y clang libclang-rt-14-dev" >&2
	rm -f "$probe" "$probe.c" "$probe.log"
	exit 2
fi
rm -f "$probe" "$probe.c" "$probe.log"

# The sanitizers' reports should name the failing line.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS UBSAN_OPTIONS

tmp=$(mktemp -d "${TMPDIR:-/tmp}/postern-fuzz.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

failed=""
start=$(date +%s)
for t in $TARGETS; do
	mod=${t#fuzz_}
	src=tests/fuzz/$t.c
	corpus=tests/fuzz/corpus/$t
	bin=$OUT/$t
	if [ ! -f "$src" ] || [ ! -f "proxy/$mod.c" ]; then
		echo "run.sh: unknown target $t" >&2
		failed="$failed $t(unknown)"
		continue
	fi
	echo "== $t: build"
	# shellcheck disable=SC2086
	if ! "$CC" $FLAGS -o "$bin" "$src" "proxy/$mod.c" -lcrypto; then
		failed="$failed $t(build)"
		continue
	fi
	dict=""
	[ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"

	echo "== $t: replay $(find "$corpus" -type f | wc -l) corpus inputs"
	if ! "$bin" -runs=0 -timeout=10 -artifact_prefix="$OUT/artifacts/$t-" \
		"$corpus" >"$tmp/$t.replay.log" 2>&1; then
		cat "$tmp/$t.replay.log"
		failed="$failed $t(replay)"
		continue
	fi
	grep -E 'DONE' "$tmp/$t.replay.log" | tail -n 1

	[ "$SECONDS_PER_TARGET" -eq 0 ] && continue
	echo "== $t: fuzz ${SECONDS_PER_TARGET}s"
	mkdir -p "$tmp/$t" && cp "$corpus"/* "$tmp/$t/" || exit 2
	# shellcheck disable=SC2086
	if ! "$bin" -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $dict \
		-artifact_prefix="$OUT/artifacts/$t-" "$tmp/$t" \
		>"$tmp/$t.fuzz.log" 2>&1; then
		tail -n 80 "$tmp/$t.fuzz.log"
		failed="$failed $t(fuzz)"
		continue
	fi
	grep -E 'DONE|^Done' "$tmp/$t.fuzz.log" | tail -n 2
done

echo "== fuzz: $(( $(date +%s) - start ))s total"
if [ -n "$failed" ]; then
	echo "FAILED:$failed (crash inputs in $OUT/artifacts/)" >&2
	exit 1
fi
echo "OK: all fuzz targets passed"
