"""The input subsystem: everything from a file on disk to a batch of arrays.

Preparing (once): `sources` names every source by its `data.source` and asks the config's
one; each is a class in a module of its own (`ilsvrc2012`: the ILSVRC-2012 tars;
`image_folder`: an image folder, and the `synthetic` generator's; `tfds_catalog`: a TFDS
catalog dataset) on the machinery of `datasets`, which turns a source into TFDS ArrayRecord
files of §2's 256x256 JPEGs (`decode` resizes and re-encodes) and opens them. `statistics`
caches the training set's mean image (§2) and RGB PCA (§4.1) beside them; `prepare` is that
step as a function and a command. Reading (every run): `pipeline` builds the Grain training
stream and evaluation pass, with §4.1's augmentation from `augment`; `workers` runs a Grain
dataset in worker processes that send their batches through shared memory (the pipeline
and the statistics pass both use it).

May import: the standard library, numpy, PIL, grain, tensorflow_datasets, array_record,
absl, and `alexnet_jax.runtime` (the `prepare` command's start). Never the net, the
training, `tools` or `experiments`; they import this package, not the reverse. Inside it,
preparing and reading go one way: decode < synthetic < datasets < ilsvrc2012 < image_folder <
tfds_catalog < sources < workers < statistics < augment < pipeline < prepare, each module
importing only ones before it.
"""
