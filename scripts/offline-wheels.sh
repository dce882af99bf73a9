#!/usr/bin/env bash
# Wheels for a machine without a package index (an air-gapped GPU host): what hypersweep needs
# beyond PyTorch and the scientific stack, slimmed to ~50 MiB.
#
# Target: Linux x86_64, CPython 3.12, with torch (a CUDA build) and these already installed:
# numpy, pandas, pyarrow, scipy, scikit-learn, statsmodels, matplotlib, requests, protobuf, grpcio,
# aiohttp, msgpack, click, rich, pyyaml, psutil, filelock, fsspec, packaging, typing-extensions,
# cloudpickle, tqdm, jinja2, markupsafe, attrs, anyio, h11, werkzeug, prometheus-client,
# annotated-doc (fastapi imports it).
#
# Usage (on a machine with the package index; needs python3 with pip, strip and bc):
#   bash scripts/offline-wheels.sh [OUTDIR]                 (default ./offline-wheels)
#   WHEELS_FROM=/dir/with/wheels bash scripts/offline-wheels.sh OUTDIR   (reuse downloaded wheels)
# On the target, with OUTDIR copied there:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site OUTDIR/*.whl
#   export PYTHONPATH=/tmp/site:$REPO/platform:$REPO
# Then `python3 -m hypersweep run ...` and `python3 -m benchmarks.gpu` work there. Not included:
# what only MLflow's server and UI use (flask, gunicorn, graphene, uvicorn, ...), so
# `hypersweep ui` and `mlflow server` do not; Ray's dashboard web UI and Java workers neither.
set -euo pipefail

OUT=$(realpath -m "${1:-offline-wheels}")
WORK=$(realpath -m "${WORK:-$OUT.work}")
PIP=${PIP:-python3 -m pip}
rm -rf "$OUT" "$WORK"; mkdir -p "$OUT" "$WORK/dl"

# ---- exactly these distributions, pinned to the versions pyproject.toml resolves to
PKGS=(
  ray==2.60.0                        # slimmed below
  mlflow==3.17.2                     # slimmed below; its wheel is a byte-identical superset of
                                     # mlflow-skinny + mlflow-tracing, so those two are NOT shipped
  optuna==5.0.0 colorlog==6.12.0
  alembic==1.20.1 mako==1.4.3 sqlalchemy==2.1.9
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  jsonschema==4.26.0 referencing==0.37.0 rpds-py==2026.9.1 jsonschema-specifications==2025.9.1
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2
  cachetools==7.3.3 sqlparse==0.6.1 databricks-sdk==0.162.0 python-dotenv==1.2.4
  gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3
  importlib-metadata==9.1.0 zipp==4.1.2
  tensorboardx==2.6.5                # ray[tune] extra
  fastapi==0.165.0 starlette==1.10.0 # imported by `import mlflow` (mlflow.gateway.utils) 
  cryptography==50.0.2 cffi==2.1.1 pycparser==3.12   # imported by mlflow's SqlAlchemyStore
                                     # (model_registry/dbmodels uses cryptography.fernet) 
)
# Not shipped (MLflow's tracking/UI server only, or optional; `hypersweep run` with a local
# SQLite store runs without them):
#   mlflow-skinny, mlflow-tracing (contents already inside the mlflow wheel), flask, flask-cors,
#   blinker, itsdangerous, gunicorn, graphene, graphql-core, graphql-relay, uvicorn, docker,
#   huey, skops, prettytable, wcwidth, google-auth, pyasn1, pyasn1-modules.
# Consequence: `mlflow server` / `mlflow ui` / `hypersweep ui` do NOT work from this bundle.

if [[ -n "${WHEELS_FROM:-}" ]]; then
  for spec in "${PKGS[@]}"; do
    n=${spec%%==*}; v=${spec##*==}; pat=$(echo "$n" | tr - _)
    f=$(ls "$WHEELS_FROM" | grep -iE "^${pat}-${v}-" | head -1)
    [[ -n "$f" ]] || { echo "missing wheel for $spec in $WHEELS_FROM" >&2; exit 1; }
    cp "$WHEELS_FROM/$f" "$WORK/dl/"
  done
else
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --abi cp312 --abi abi3 --abi none \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      -d "$WORK/dl" "${PKGS[@]}"
fi

# ---- slim + strip + repack (regenerates RECORD with sha256/size, so pip accepts the wheel)
python3 - "$WORK/dl" "$OUT" <<'PY'
import base64, hashlib, os, re, shutil, subprocess, sys, tempfile, zipfile
src, out = sys.argv[1], sys.argv[2]

DROP = {
  "ray": [
    r"ray/jars/",                      # 32 MB zipped: ray_dist.jar, Java workers only
    r"ray/dashboard/client/build/",    # dashboard web UI (JS); head tolerates its absence, and
                                       # hypersweep calls ray.init(include_dashboard=False)
    r"ray/rllib/", r"ray/serve/", r"ray/llm/",   # libraries Tune does not import (ray.data IS: ray.air imports it)
    r"ray/setup-dev\.py$",
    r".*\.pyi$",                       # type stubs
  ],
  "mlflow": [
    r"mlflow/server/js/",              # 7.7 MB zipped: MLflow UI bundle, server only
    r".*\.pyi$",
  ],
}
def is_elf(p):
    with open(p, "rb") as f: return f.read(4) == b"\x7fELF"

def repack(whl):
    name = os.path.basename(whl).split("-")[0].lower()
    drops = [re.compile(d) for d in DROP.get(name, [])]
    tmp = tempfile.mkdtemp()
    with zipfile.ZipFile(whl) as z:
        z.extractall(tmp)
        perms = {i.filename: (i.external_attr >> 16) for i in z.infolist()}
    # drop
    removed = 0
    for root, dirs, files in os.walk(tmp):
        for fn in files:
            rel = os.path.relpath(os.path.join(root, fn), tmp).replace(os.sep, "/")
            if any(d.match(rel) for d in drops):
                removed += os.path.getsize(os.path.join(root, fn)); os.remove(os.path.join(root, fn))
    # strip debug/symbol tables from ELF files (exe + .so); keeps .dynsym, so linking is unchanged
    for root, dirs, files in os.walk(tmp):
        for fn in files:
            p = os.path.join(root, fn)
            if is_elf(p):
                subprocess.run(["strip", "--strip-unneeded", p], check=True)
    # rewrite RECORD
    distinfo = [d for d in os.listdir(tmp) if d.endswith(".dist-info")][0]
    record = f"{distinfo}/RECORD"
    rows, files_sorted = [], []
    for root, dirs, files in os.walk(tmp):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for fn in files:
            rel = os.path.relpath(os.path.join(root, fn), tmp).replace(os.sep, "/")
            if rel == record: continue
            files_sorted.append(rel)
    files_sorted.sort(key=lambda r: (r.startswith(distinfo), r))
    for rel in files_sorted:
        data = open(os.path.join(tmp, rel), "rb").read()
        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{rel},sha256={h},{len(data)}")
    rows.append(f"{record},,")
    open(os.path.join(tmp, record), "w").write("\n".join(rows) + "\n")
    dst = os.path.join(out, os.path.basename(whl))
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for rel in files_sorted + [record]:
            zi = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = (perms.get(rel, 0o100644) or 0o100644) << 16
            z.writestr(zi, open(os.path.join(tmp, rel), "rb").read(), compresslevel=9)
    shutil.rmtree(tmp)
    print(f"{os.path.getsize(whl)/2**20:7.2f} -> {os.path.getsize(dst)/2**20:7.2f} MiB  {os.path.basename(whl)}"
          + (f"  (dropped {removed/2**20:.1f} MiB unpacked)" if removed else ""))

for w in sorted(os.listdir(src)):
    if w.endswith(".whl"): repack(os.path.join(src, w))
PY

total=$(find "$OUT" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
printf 'bundle: %s  %d files  %.2f MiB\n' "$OUT" "$(ls "$OUT" | wc -l)" "$(echo "$total/1048576" | bc -l)"
# ~50 MiB slimmed: more means a new version brought files the slimming above does not drop.
(( total <= 60*1048576 )) || { echo "the wheels exceed 60 MiB: check what the slimming missed" >&2; exit 1; }
rm -rf "$WORK"
