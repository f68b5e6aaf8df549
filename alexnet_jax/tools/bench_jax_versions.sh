#!/usr/bin/env bash
# The CPU rows of docs/benchmarks.md, "Two JAX versions on one CPU": tools/bench for the
# paper net and the torchvision layout at batch 16 and 64 (one device, float32, 224 crops),
# under each Python environment given, one run at a time, on the same machine; PyTorch's
# twins (eager and torch.compile, in the paper rows' processes) where torch is installed.
# Writes every report to OUT and prints the CPU, the load and one table.
#
#   bash alexnet_jax/tools/bench_jax_versions.sh OUT PYTHON [PYTHON ...]
#   e.g. bash alexnet_jax/tools/bench_jax_versions.sh runs/jax_versions \
#            ~/venv311/bin/python ~/venv312/bin/python
set -euo pipefail
out=$(realpath -m "$1")
shift
mkdir -p "$out"
cd "$(dirname "$0")/../.."
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
     "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for python in "$@"; do
  tag=$("$python" -c 'import jax, platform; print(f"py{platform.python_version()}-jax{jax.__version__}")')
  torch=$("$python" -c 'import importlib.util as u; print("yes" if u.find_spec("torch") else "")')
  for layout in paper torchvision; do
    for batch in 16 64; do
      args=(--config=configs/ilsvrc2012.py --config.mesh.tower=1 --batch="$batch" --steps=5
            --warmup=2 --json="$out/$tag-$layout-$batch.json")
      if [ "$layout" = torchvision ]; then
        args+=(--config.model.layout=torchvision --config.model.towers=1)
      elif [ -n "$torch" ]; then
        args+=(--torch --torch_modes=eager,compile)
      fi
      echo "== $tag $layout batch $batch"
      "$python" -m alexnet_jax.tools.bench "${args[@]}" > "$out/$tag-$layout-$batch.log" 2>&1
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'EOF'
import glob, json, os, sys
reports = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(sys.argv[1], '*.json')))]
torch = {}  # (layout, batch) -> {mode: images/s}, from the paper rows' PyTorch twins.
for r in reports:
  for row in (r['torch'] or {}).get('rows', []):
    torch.setdefault((row['layout'], r['config']['batch']), {})[row['mode']] = row['images_per_s']
print('| Python, jax | net | batch | JAX images/s | PyTorch eager | PyTorch compile | JAX / best PyTorch |')
print('|---|---|---|---|---|---|---|')
for r in reports:
  c, v = r['config'], r['versions']
  rate = r['jax']['images_per_s']
  t = torch.get((c['layout'], c['batch']), {})
  best = f"{rate / max(t.values()):.2f}x" if t else '-'
  print(f"| {v.get('python', '?')}, {v['jax']} | {c['layout']} | {c['batch']} | {rate:.1f} | "
        f"{t.get('eager', float('nan')):.1f} | {t.get('compile', float('nan')):.1f} | {best} |")
EOF
