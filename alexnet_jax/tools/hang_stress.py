"""Command: many short demo runs on two forced CPU devices, under load, counting hangs.

  python -m alexnet_jax.tools.hang_stress --out=RUNS/stress --runs=20 --steps=60 --load=2

Each run trains configs/demo.py (one forced CPU device per tower) for `--steps` steps,
saving every `--save_every` steps, while `--load` busy processes compete for the cores:
the conditions under which steps on several CPU devices have hung in a collective. A run
that hangs ends either by the watchdog (exit 75; runtime/watchdog.py) or by XLA's
collective timeout, shortened here to `--collective_timeout` seconds (exit 134), so a hang
costs a minute, not ten. `--project=DIR` runs another checkout's code (`python -m` runs
the package in its working directory), to compare a change with the code before it.
Prints one line per run and a summary (runs, steps, hangs, other failures), and writes it
as JSON to OUT/stress.json. Exits non-zero if any run failed.
"""

import collections
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time

from absl import flags

from alexnet_jax.runtime import command_line, watchdog

FLAGS = flags.FLAGS
flags.DEFINE_string('out', None, 'Directory for the runs, their shared data and stress.json.',
                    required=True)
flags.DEFINE_integer('runs', 20, 'How many runs.')
flags.DEFINE_integer('steps', 60, 'Training steps per run.')
flags.DEFINE_integer('save_every', 10, 'Checkpoint every N steps.')
flags.DEFINE_integer('load', 2, 'Busy processes beside each run.')
flags.DEFINE_integer('collective_timeout', 60, 'XLA:CPU aborts a collective stuck this long.')
flags.DEFINE_string('project', command_line.PROJECT, 'The checkout whose alexnet_jax runs '
                    '(another one: to compare a change with the code before it).')


def _busy(parent: int) -> None:
  """Spins until its parent is gone (however the parent ended)."""
  while os.getppid() == parent:
    for _ in range(1_000_000):
      pass


def _outcome(code: int) -> str:
  if code == 0:
    return 'ok'
  if code in (watchdog.HANG_EXIT_CODE, 134, -6):  # The watchdog, or XLA's abort.
    return 'hang'
  return 'failed'


def _one_run(k: int) -> tuple[str, int, float]:
  """(outcome, steps logged, seconds) of run k."""
  workdir = os.path.join(FLAGS.out, f'run_{k}')
  argv = [sys.executable, '-u', '-m', 'alexnet_jax.main', '--config=configs/demo.py',
          f'--workdir={workdir}', f'--config.data.data_dir={os.path.join(FLAGS.out, "data")}',
          f'--config.train.num_steps={FLAGS.steps}', '--config.train.log_every_steps=1',
          f'--config.checkpoint.every_steps={FLAGS.save_every}',
          f'--config.train.eval_every_steps={10 * FLAGS.steps}', '--config.eval.ten_patch=False']
  env = dict(os.environ, XLA_FLAGS=(
      '--xla_cpu_collective_call_warn_stuck_timeout_seconds=10 '
      f'--xla_cpu_collective_call_terminate_timeout_seconds={FLAGS.collective_timeout}'))
  start = time.time()
  proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=FLAGS.project)
  steps = len(re.findall(r'^step \d+/', proc.stdout, flags=re.M))
  with open(os.path.join(FLAGS.out, f'run_{k}.log'), 'w') as f:
    f.write(proc.stdout + proc.stderr)
  return _outcome(proc.returncode), steps, time.time() - start


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  load = [multiprocessing.Process(target=_busy, args=(os.getpid(),), daemon=True)
          for _ in range(FLAGS.load)]
  for p in load:
    p.start()
  counts, steps = collections.Counter(), 0
  try:
    for k in range(FLAGS.runs):
      outcome, logged, seconds = _one_run(k)
      counts[outcome] += 1
      steps += logged
      print(f'run {k + 1}/{FLAGS.runs}: {outcome}, {logged} steps logged, {seconds:.0f} s',
            flush=True)
  finally:
    for p in load:
      p.terminate()
  summary = {'runs': FLAGS.runs, 'steps_logged': steps, 'hangs': counts['hang'],
             'other_failures': counts['failed'], 'load_processes': FLAGS.load,
             'steps_per_run': FLAGS.steps, 'save_every': FLAGS.save_every}
  with open(os.path.join(FLAGS.out, 'stress.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(json.dumps(summary))
  return 1 if counts['hang'] or counts['failed'] else 0


if __name__ == '__main__':
  command_line.run(lambda argv: sys.exit(main(argv)))
