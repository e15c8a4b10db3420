#!/usr/bin/env bash
# check_image.sh: offline checks of the container image recipe (no container
# engine needed). Run from anywhere; exits 1 on any problem.
#
#   1. Dockerfile lint (dockerfile-utils, from tools/): no problem of any
#      severity.
#   2. Runtime libraries: every shared library build/shears loads (ldd) comes
#      from a package of runtime_pkgs in scripts/deps.sh, from a dependency
#      of those (apt-cache depends --recurse, local apt metadata), or from
#      the listed always-present packages of debian:bookworm-slim. Every
#      package deps.sh installs (--build, --runtime) exists in the local apt
#      metadata.
#   3. Dockerfile structure: debian:bookworm build stage and
#      debian:bookworm-slim runtime stage, both install through
#      scripts/deps.sh; the binary comes from the build stage; non-root USER,
#      HEALTHCHECK on /healthz, exec-form ENTRYPOINT/CMD, VOLUME /data,
#      EXPOSE 8080, the SHEARS_* defaults, the OCI version label equal to
#      common/version.h; .dockerignore keeps the sources make needs.
#
# If build/shears is missing it builds build/image-check/shears (never a
# plain `make`).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

failures=0
fail() {
  echo "check_image: FAIL: $*" >&2
  failures=$((failures + 1))
}
section() { printf '\n== %s\n' "$*"; }

# --- 1. lint ---------------------------------------------------------------
section "Dockerfile lint (dockerfile-utils)"
lint=tools/node_modules/.bin/dockerfile-utils
if [[ ! -f Dockerfile ]]; then
  fail "no Dockerfile"
elif [[ ! -x $lint ]]; then
  fail "$lint is missing; run scripts/deps.sh (it installs tools/)"
else
  # The plain output exits 0 on warnings: the JSON form is the verdict.
  json=$("$lint" lint --json Dockerfile 2>&1)
  if [[ "$json" == "[]" ]]; then
    echo "ok: no problems"
  else
    "$lint" lint Dockerfile >&2 || true
    fail "dockerfile-utils reports problems: $json"
  fi
fi

# --- 2. runtime libraries --------------------------------------------------
section "shared libraries of the binary vs runtime_pkgs (scripts/deps.sh)"
bin=build/shears
if [[ ! -x $bin ]]; then
  echo "build/shears is missing: building build/image-check/shears"
  if make --no-print-directory BUILD=build/image-check build/image-check/shears; then
    bin=build/image-check/shears
  else
    fail "could not build build/image-check/shears"
    bin=
  fi
fi

# The package lists, from the script that installs them (the one list).
mapfile -t runtime < <(scripts/deps.sh --list-runtime)
mapfile -t buildlist < <(scripts/deps.sh --list-build)
if ((${#runtime[@]} == 0)); then
  fail "no runtime_pkgs found in scripts/deps.sh"
fi
echo "runtime_pkgs: ${runtime[*]}"

# Always present in debian:bookworm-slim (Essential/required packages and
# their libraries); a library from one of these needs no entry in the list.
base_pkgs=(
  libc6 libgcc-s1 libstdc++6 gcc-12-base zlib1g liblzma5 libbz2-1.0
  libzstd1 liblz4-1 libacl1 libattr1 libselinux1 libpcre2-8-0 libcrypt1
  libmd0 libgmp10 libtinfo6
)
echo "base image packages allowed: ${base_pkgs[*]}"

declare -A in_runtime=() in_closure=() in_base=()
for p in "${runtime[@]}"; do in_runtime[$p]=1; done
for p in "${base_pkgs[@]}"; do in_base[$p]=1; done

strip_pkg() { sed -e 's/[<>]//g' -e 's/:[a-z0-9]*$//'; }

# Dependencies of the runtime list: Depends and Pre-Depends, recursively.
# Alternatives and virtual packages count. When every runtime package is
# installed here (they are: the -dev packages pull them in), the installed
# packages' records are walked (fast); otherwise the apt metadata is asked.
closure_ok=0
all_installed=1
for p in "${runtime[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || all_installed=0
done
if ((all_installed)); then
  queue=("${runtime[@]}")
  while ((${#queue[@]})); do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    [[ -n "${in_closure[$p]:-}" ]] && continue
    in_closure[$p]=1
    d=$(dpkg-query -W -f='${Depends}, ${Pre-Depends}, ${Provides}' "$p" 2>/dev/null) || continue
    closure_ok=1
    while read -r q; do
      [[ -n "$q" && -z "${in_closure[$q]:-}" ]] && queue+=("$q")
    done < <(printf '%s\n' "$d" | sed -e 's/([^)]*)//g' -e 's/[ \t]//g' | tr ',|' '\n' | strip_pkg)
  done
elif deps_out=$(apt-cache depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances \
  "${runtime[@]}" 2>/dev/null) && [[ -n "$deps_out" ]]; then
  while read -r p; do
    [[ -n "$p" ]] && in_closure[$p]=1
  done < <(printf '%s\n' "$deps_out" |
    sed -n -e 's/^[^ ].*/&/p' -e 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: *//p' |
    strip_pkg)
  closure_ok=1
fi
((closure_ok)) || fail "could not compute the dependencies of runtime_pkgs (apt-cache, dpkg-query)"
echo "dependency closure of runtime_pkgs: ${#in_closure[@]} packages"

# Every package deps.sh installs exists for this release.
for p in "${runtime[@]}" "${buildlist[@]}"; do
  if ! dpkg-query -W "$p" >/dev/null 2>&1 &&
    ! apt-cache show --no-all-versions "$p" >/dev/null 2>&1; then
    fail "deps.sh installs '$p', which the apt metadata does not know"
  fi
done

# Which package owns a library file. dpkg records /lib or /usr/lib paths
# as shipped and usrmerge makes both exist, so every spelling is asked, all
# in one dpkg-query call (each call reads the whole file database).
declare -A owned_by=()
spellings() {
  local f=$1 r
  r=$(readlink -f "$f")
  printf '%s\n' "$f" "$r" "${f#/usr}" "/usr$f" "${r#/usr}" "/usr$r"
}
load_owners() { # load_owners PATH...
  local -a all=()
  local f line pkgs
  for f in "$@"; do mapfile -t -O "${#all[@]}" all < <(spellings "$f"); done
  while IFS= read -r line; do
    pkgs=${line%%: /*}
    owned_by[${line#*: }]=$(printf '%s\n' "${pkgs%%,*}" | strip_pkg)
  done < <(dpkg-query -S "${all[@]}" 2>/dev/null)
}
owner() {
  local c
  while read -r c; do
    if [[ -n "$c" && -n "${owned_by[$c]:-}" ]]; then
      printf '%s\n' "${owned_by[$c]}"
      return 0
    fi
  done < <(spellings "$1")
  return 1
}

if [[ -n "$bin" ]]; then
  echo "binary: $bin"
  if ! ldd_out=$(ldd "$bin" 2>&1); then
    fail "ldd $bin: $ldd_out"
  fi
  if grep -q 'not found' <<<"$ldd_out"; then
    fail "unresolved libraries: $(grep 'not found' <<<"$ldd_out" | tr -s ' \t' ' ')"
  fi
  declare -A used=()
  mapfile -t libpaths < <(awk '$2 == "=>" && $3 ~ /^\// {print $3; next}
                               $1 ~ /^\// {print $1}' <<<"$ldd_out")
  load_owners "${libpaths[@]}"
  printf '%-24s %-28s %s\n' "library" "package" "allowed as"
  while read -r soname path; do
    [[ -n "$path" && -e "$path" ]] || continue
    if ! pkg=$(owner "$path"); then
      printf '%-24s %-28s %s\n' "$soname" "?" "NOT OWNED BY ANY PACKAGE"
      fail "$soname ($path) belongs to no Debian package"
      continue
    fi
    used[$pkg]=1
    if [[ -n "${in_runtime[$pkg]:-}" ]]; then
      how="runtime_pkgs"
    elif [[ -n "${in_closure[$pkg]:-}" ]]; then
      how="dependency of runtime_pkgs"
    elif [[ -n "${in_base[$pkg]:-}" ]]; then
      how="base image"
    else
      how="MISSING"
      fail "$soname comes from $pkg, which neither runtime_pkgs in scripts/deps.sh nor its dependencies nor the base image provide"
    fi
    printf '%-24s %-28s %s\n' "$soname" "$pkg" "$how"
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $1, $3; next}
                $1 ~ /^\// {n = split($1, a, "/"); print a[n], $1}' <<<"$ldd_out")
  # Informational: runtime packages no library comes from.
  for p in "${runtime[@]}"; do
    case $p in curl | ca-certificates) continue ;; esac
    [[ -n "${used[$p]:-}" ]] || echo "note: runtime_pkgs has $p, but no library of $bin comes from it"
  done
fi

# --- 3. Dockerfile structure -----------------------------------------------
section "Dockerfile structure"
if [[ -f Dockerfile && -d tools/node_modules/dockerfile-utils ]]; then
  node --input-type=module - <<'EOF' || failures=$((failures + 1))
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const req = createRequire(path.resolve(process.cwd(), "tools/node_modules/"));
// dockerfile-ast is dockerfile-utils' own parser: resolve it from there.
const { DockerfileParser } = createRequire(req.resolve("dockerfile-utils"))(
  "dockerfile-ast",
);

let bad = 0;
const ok = (cond, msg) => {
  console.log(`${cond ? "ok  " : "FAIL"} ${msg}`);
  if (!cond) bad++;
};

const text = fs.readFileSync("Dockerfile", "utf8");
const df = DockerfileParser.parse(text);
const all = df.getInstructions();

// Split into stages at each FROM.
const stages = [];
for (const ins of all) {
  if (ins.getKeyword() === "FROM") stages.push({ from: ins, ins: [] });
  else if (stages.length) stages[stages.length - 1].ins.push(ins);
}
const args = (i) => i.getArgumentsContent() || "";
const kw = (st, k) => st.ins.filter((i) => i.getKeyword() === k);
const jsonForm = (i) => {
  try {
    const v = JSON.parse(args(i));
    return Array.isArray(v) && v.every((s) => typeof s === "string") ? v : null;
  } catch {
    return null;
  }
};

ok(stages.length >= 2, `multi-stage (${stages.length} stages)`);
if (stages.length < 2) process.exit(1);
const build = stages[0];
const final = stages[stages.length - 1];
const fromImg = (st) => st.from.getImageName() + ":" + (st.from.getImageTag() || "");
ok(fromImg(build) === "debian:bookworm", `build stage FROM ${fromImg(build)} (want debian:bookworm)`);
const stageName = build.from.getBuildStage();
ok(!!stageName, `build stage is named (${stageName})`);
ok(fromImg(final) === "debian:bookworm-slim", `runtime stage FROM ${fromImg(final)} (want debian:bookworm-slim)`);

// Packages: scripts/deps.sh in both stages, --runtime in the last.
const runs = (st) => kw(st, "RUN").map(args);
const buildDeps = runs(build).find((r) => /(^|[\s/])(scripts\/)?deps\.sh\b/.test(r));
ok(!!buildDeps, "build stage installs through scripts/deps.sh");
ok(buildDeps && !/--runtime/.test(buildDeps), "build stage runs deps.sh without --runtime");
ok(runs(build).some((r) => /(^|[\s;&|(])make\b/.test(r)), "build stage runs make");
ok(runs(build).some((r) => /\/usr\/local\/bin\/shears/.test(r)), "build stage installs /usr/local/bin/shears");
ok(kw(final, "COPY").some((c) => /^scripts\/deps\.sh\s/.test(args(c))),
  "runtime stage copies scripts/deps.sh");
ok(runs(final).some((r) => /deps\.sh\s+--runtime\b/.test(r)),
  "runtime stage runs deps.sh --runtime");
ok(!runs(final).some((r) => /apt-get\s+install|\bapt\s+install/.test(r)),
  "runtime stage installs no package outside deps.sh");
const fromFlag = (c) => (c.getFlags().find((f) => f.getName() === "from") || { getValue: () => null }).getValue();
const binCopy = kw(final, "COPY").find((c) => fromFlag(c) !== null);
ok(!!binCopy && fromFlag(binCopy) === stageName &&
   /^\/usr\/local\/bin\/shears\s+\/usr\/local\/bin\/shears\/?$/.test(args(binCopy)),
   `runtime stage copies /usr/local/bin/shears from the build stage (${binCopy ? "--from=" + fromFlag(binCopy) + " " + args(binCopy) : "none"})`);

// Non-root user, created in the image with a fixed uid.
const users = kw(final, "USER");
const user = users.length ? args(users[users.length - 1]).split(":")[0] : "";
ok(!!user && user !== "root" && user !== "0", `USER is non-root (${user || "none"})`);
if (/^\d+$/.test(user)) {
  ok(Number(user) !== 0, `USER uid ${user}`);
} else if (user) {
  const ua = runs(final).join(" ").match(new RegExp(`useradd[^&;]*--uid\\s+(\\d+)[^&;]*\\b${user}\\b`));
  ok(!!ua && Number(ua[1]) !== 0, `user ${user} created with a non-zero --uid (${ua ? ua[1] : "?"})`);
}
const lastUser = users[users.length - 1];
ok(!!lastUser && final.ins.indexOf(lastUser) > final.ins.indexOf(kw(final, "RUN").slice(-1)[0]),
  "USER comes after the last RUN");

// HEALTHCHECK, ENTRYPOINT, CMD.
const hc = kw(final, "HEALTHCHECK");
ok(hc.length === 1 && /\bCMD\b/.test(args(hc[0])) && /curl\b.*-f.*\/healthz/.test(args(hc[0])),
  "HEALTHCHECK calls curl -f .../healthz");
ok(hc.length === 1 && args(hc[0]).includes("127.0.0.1:8080"), "HEALTHCHECK targets 127.0.0.1:8080");
const ep = kw(final, "ENTRYPOINT");
ok(ep.length === 1 && JSON.stringify(jsonForm(ep[0])) === '["shears"]',
  `ENTRYPOINT is exec form ["shears"] (${ep.length ? args(ep[0]) : "none"})`);
const cmd = kw(final, "CMD");
ok(cmd.length === 1 && JSON.stringify(jsonForm(cmd[0])) === '["serve"]',
  `CMD is exec form ["serve"] (${cmd.length ? args(cmd[0]) : "none"})`);

// Volume, workdir, port, environment.
ok(kw(final, "VOLUME").some((v) => {
  const j = jsonForm(v);
  return j ? j.includes("/data") : args(v).split(/\s+/).includes("/data");
}), "VOLUME /data");
const wd = kw(final, "WORKDIR");
ok(wd.length > 0 && args(wd[wd.length - 1]) === "/data", "WORKDIR /data");
ok(kw(final, "EXPOSE").some((e) => args(e).split(/\s+/).some((p) => p.replace(/\/tcp$/, "") === "8080")),
  "EXPOSE 8080");
const env = {};
for (const e of kw(final, "ENV")) for (const p of e.getProperties()) env[p.getName()] = p.getValue();
ok(env.SHEARS_LISTEN === "0.0.0.0:8080", `ENV SHEARS_LISTEN=${env.SHEARS_LISTEN}`);
ok(env.SHEARS_DATA_DIR === "/data", `ENV SHEARS_DATA_DIR=${env.SHEARS_DATA_DIR}`);

// OCI labels; the version label follows common/version.h.
const labels = {};
for (const l of kw(final, "LABEL")) for (const p of l.getProperties()) labels[p.getName()] = p.getValue();
const argDefaults = {};
for (const a of kw(final, "ARG")) for (const p of a.getProperties()) argDefaults[p.getName()] = p.getValue();
const expand = (s) => (s || "").replace(/\$\{?(\w+)\}?/g, (_, n) => argDefaults[n] ?? "");
const shVersion = (fs.readFileSync("common/version.h", "utf8").match(/SH_VERSION\s+"([^"]+)"/) || [])[1];
ok(!!labels["org.opencontainers.image.title"], "LABEL org.opencontainers.image.title");
ok(expand(labels["org.opencontainers.image.version"]) === shVersion,
  `LABEL org.opencontainers.image.version=${expand(labels["org.opencontainers.image.version"])} (common/version.h: ${shVersion})`);

// .dockerignore must keep what the build stage needs. Docker's rules:
// patterns in order, the last match wins, a match on a parent dir counts.
const globRe = (g) =>
  new RegExp("^" + g.replace(/\/+$/, "").split(/(\*\*\/?|\*|\?)/).map((t) =>
    t === "**/" || t === "**" ? ".*" : t === "*" ? "[^/]*" : t === "?" ? "[^/]" :
    t.replace(/[.+^${}()|[\]\\]/g, "\\$&")).join("") + "$");
const rules = fs.existsSync(".dockerignore")
  ? fs.readFileSync(".dockerignore", "utf8").split("\n").map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"))
      .map((l) => ({ neg: l.startsWith("!"), re: globRe(path.posix.normalize(l.replace(/^!/, "").replace(/^\//, ""))) }))
  : [];
const ignored = (p) => {
  const parts = p.split("/");
  let out = false;
  for (const r of rules) {
    for (let i = 1; i <= parts.length; i++) {
      if (r.re.test(parts.slice(0, i).join("/"))) { out = !r.neg; break; }
    }
  }
  return out;
};
const mk = fs.readFileSync("Makefile", "utf8");
const modules = ((mk.match(/^MODULES\s*:=\s*(.*)$/m) || [])[1] || "").trim().split(/\s+/);
const needed = ["Makefile", "scripts/deps.sh", "openapi.yaml", "api/dashboard.html",
  ...modules.flatMap((m) => fs.readdirSync(m).filter((f) => /\.[ch]$/.test(f)).map((f) => `${m}/${f}`))];
const lost = needed.filter(ignored);
ok(fs.existsSync(".dockerignore"), ".dockerignore exists");
ok(lost.length === 0, `.dockerignore keeps the ${needed.length} files make needs` +
  (lost.length ? ` (excluded: ${lost.join(" ")})` : ""));
ok(["build", "tools/node_modules", ".git"].every(ignored), ".dockerignore excludes build/, tools/node_modules/, .git");

process.exit(bad ? 1 : 0);
EOF
else
  fail "Dockerfile or tools/node_modules/dockerfile-utils missing: structure not checked"
fi

echo
if ((failures)); then
  echo "check_image: $failures problem(s)" >&2
  exit 1
fi
echo "check_image: all checks passed"
