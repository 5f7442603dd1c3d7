#!/usr/bin/env bash
# Build llama.cpp's native llama-server for aigrid's embedded engine, once.
#
# The source is the llama.cpp vendored in the PyPI sdist of llama-cpp-python (a pinned, checksummed
# download through pip, no git clone). The binary is installed into
#   ~/.cache/aigrid/llama-server-<version>/bin/llama-server
# which is where aigrid.engines.model_files.find_llama_server() looks. Idempotent: exits at once when
# the binary is already there. Static build (no shared libs), no curl/OpenSSL, portable CPU code.
#
# Environment:
#   PYTHON               interpreter whose pip downloads the sdist (default: .venv/bin/python, else python3)
#   AIGRID_LLAMA_SDIST   path of an already downloaded llama_cpp_python-<version>.tar.gz (skips pip)
#   JOBS                 parallel compile jobs (default 2)
set -euo pipefail

VERSION=0.3.36
PREFIX="$HOME/.cache/aigrid/llama-server-$VERSION"
BIN="$PREFIX/bin/llama-server"
JOBS="${JOBS:-2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { echo "[build_llama_server] $*"; }

if [ -x "$BIN" ]; then
  say "llama-server $VERSION already built: $BIN"
  exit 0
fi

for tool in cmake c++ tar; do
  command -v "$tool" >/dev/null || { say "missing '$tool': install cmake and a C++ compiler (apt-get install cmake g++)"; exit 1; }
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/aigrid-llama-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [ -n "${AIGRID_LLAMA_SDIST:-}" ]; then
  say "[1/5] using sdist $AIGRID_LLAMA_SDIST"
  SDIST="$AIGRID_LLAMA_SDIST"
else
  say "[1/5] downloading the llama-cpp-python==$VERSION sdist with $PYTHON -m pip"
  "$PYTHON" -m pip download --no-deps --no-binary :all: --dest "$WORK/dl" "llama-cpp-python==$VERSION"
  SDIST="$(find "$WORK/dl" -maxdepth 1 -name 'llama*cpp*python*.tar.gz' | head -n 1)"
  [ -n "$SDIST" ] || { say "pip did not produce a llama-cpp-python sdist in $WORK/dl"; exit 1; }
fi

say "[2/5] extracting $(basename "$SDIST")"
mkdir -p "$WORK/src"
tar -xzf "$SDIST" -C "$WORK/src"
SRC="$(find "$WORK/src" -mindepth 3 -maxdepth 3 -type d -path '*/vendor/llama.cpp' | head -n 1)"
[ -n "$SRC" ] || { say "no vendor/llama.cpp inside $SDIST"; exit 1; }

say "[3/5] configuring $SRC"
cmake -S "$SRC" -B "$WORK/build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF >"$WORK/cmake.log" 2>&1 || { tail -n 30 "$WORK/cmake.log"; exit 1; }

say "[4/5] building llama-server with -j$JOBS (a few minutes)"
cmake --build "$WORK/build" --target llama-server -j"$JOBS" >"$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log"; exit 1; }
"$WORK/build/bin/llama-server" --version >/dev/null 2>&1 || { say "the built llama-server does not run"; exit 1; }

say "[5/5] installing into $PREFIX"
mkdir -p "$PREFIX/bin"
cp "$WORK/build/bin/llama-server" "$PREFIX/bin/.llama-server.tmp.$$"
mv -f "$PREFIX/bin/.llama-server.tmp.$$" "$BIN"  # atomic rename: never a half-copied binary
if command -v ldd >/dev/null; then
  say "linked against:"
  ldd "$BIN" | sed 's/^/    /'
fi
say "done: $BIN"
