#!/usr/bin/env bash
# Does libstdc++'s std::regex compile a pattern of N nested groups, or a literal of N characters, or crash?
# llama-server compiles each of a request's grammar_triggers as a std::regex (llama-grammar.cpp), and libstdc++
# compiles by recursion (once per group, once per character): docs/engines.md and docs/security.md quote what
# this prints (the gateway refuses grammar_triggers: gateway/schemas.py).
#
#   scripts/std_regex_depth.sh groups:20000 groups:50000 literal:50000 literal:100000
#
# Each argument is groups:N ("(" x N, "a", ")" x N) or literal:N ("a" x N). Writes an 11-line C++ program to a
# temporary folder, builds it with g++ -O2 (CXX to use another compiler), runs it once per argument under an
# 8 MiB stack (STACK_KB to change it), and prints "KIND:N compiled", "KIND:N crashed (SIGSEGV)" or the exit status.
set -euo pipefail
if [ $# -eq 0 ]; then
    echo "usage: $0 groups:N|literal:N ..." >&2
    exit 2
fi
for arg in "$@"; do
    case "$arg" in
        groups:[0-9]*|literal:[0-9]*) ;;
        *) echo "error: $arg: expected groups:N or literal:N" >&2; exit 2 ;;
    esac
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/depth.cpp" <<'CPP'
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <regex>
#include <string>
int main(int argc, char** argv) {
    long n = std::atol(argv[2]);
    std::string p = std::strcmp(argv[1], "groups") == 0 ? std::string(n, '(') + "a" + std::string(n, ')') : std::string(n, 'a');
    std::regex re(p);
    std::cout << argv[1] << ":" << n << " compiled (" << p.size() << " characters)" << std::endl;
}
CPP
"${CXX:-g++}" -O2 -o "$dir/depth" "$dir/depth.cpp"
for arg in "$@"; do
    status=0
    { (ulimit -s "${STACK_KB:-8192}"; exec "$dir/depth" "${arg%%:*}" "${arg#*:}") || status=$?; } 2>/dev/null
    if [ "$status" -eq 139 ]; then
        echo "$arg crashed (SIGSEGV, ${STACK_KB:-8192} KiB stack)"
    elif [ "$status" -ne 0 ]; then
        echo "$arg failed (exit status $status)"
    fi
done
