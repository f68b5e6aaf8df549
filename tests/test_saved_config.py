"""saved_config: what counts as a change of the experiment between a saved config and now."""

from alexnet_jax.run import saved_config


def test_a_field_added_later_reads_as_what_older_runs_computed():
  old = {'model': {'lrn': True}, 'data': {'image_size': 256}}  # Saved before the fields.
  now = {'model': {'lrn': True, 'matmul_precision': 'default'},
         'data': {'image_size': 256, 'allow_partial': False}}
  assert saved_config.differences(old, now) == []
  changed = {**now, 'model': {'lrn': True, 'matmul_precision': 'highest'}}
  assert [name for name, *_ in saved_config.differences(old, changed)] == [
      'model.matmul_precision']


def test_a_field_one_side_lacks_is_shown_as_unset():
  (change,) = saved_config.differences({'model': {}}, {'model': {'lrn': False}})
  assert change[0] == 'model.lrn' and repr(change[1]) == '(unset)' and change[2] is False
