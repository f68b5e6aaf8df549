"""eval.only: the errors of saved nets on a split, written beside the run.

  python -m alexnet_jax.main --workdir=runs/alexnet --config.eval.only=True

A run's checkpoint (eval.checkpoint_step, or the latest), or with eval.ensemble_workdirs
the softmax outputs of several runs averaged (each its best checkpoint by validation
error, else its latest: §6's "5 CNNs"), or, in a workdir without checkpoints, the
complete pretrained net of model.pretrained. Evaluating a run's own workdir needs its
config (saved_config.py); eval.*, the evaluation split and the devices may differ.
Writes eval_results.json and eval_config.json to the workdir.
"""

import json

import ml_collections

from alexnet_jax.nn import model
from alexnet_jax.run import saved_config, workdir as workdirs
from alexnet_jax.training import evaluate, inputs, preflight, saved_nets, sharding


def evaluate_saved(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates as the module docstring says; returns the errors."""
  preflight.check_config(config)
  workdir = workdirs.Workdir(workdir)
  ensemble = [w.strip() for w in config.eval.ensemble_workdirs.split(',') if w.strip()]
  if not ensemble:  # An ensemble's workdir holds only its evaluation, no run to match.
    saved_config.check_rerun(config, workdir.path, also=('data.eval_split',))
  mesh = sharding.make_mesh(config)
  sharding.check_batch(config.eval.batch_size, mesh, 'eval.batch_size')
  net = model.create_model(config, mesh)
  nets = saved_nets.nets_to_evaluate(config, workdir.path, net, mesh, ensemble)
  inputs.ready(config)
  stats = inputs.device_stats(config, mesh)
  params_list, where = nets()
  inputs.say('Evaluating ' + ', '.join(where))
  results = evaluate.evaluate(evaluate.make_eval_step(config, net, mesh), params_list,
                              inputs.eval_batches(config, mesh), mesh, stats)
  workdir.create()
  workdir.write_json('eval_config.json', json.loads(config.to_json_best_effort()))
  workdir.write_json('eval_results.json',
                     {'checkpoints': where, 'split': config.data.eval_split, **results})
  inputs.say(evaluate.error_table(results, config.model.num_classes))
  return results
