"""Published weights by name: `model.pretrained=torchvision` instead of a file path.

`resolve(name_or_path)` returns a file to read: a path as given, or for a name in
`PUBLISHED` the file in the cache (`$ALEXNET_JAX_CACHE`, default ~/.cache/alexnet_jax),
fetched once from its publisher's URL. A download goes to a temporary file beside it and
is renamed into place only once complete and with the SHA-256 the publisher states (for
torchvision, the first 8 hex digits in the file name), so a cut or corrupted download
never looks like a cached file; a failed one leaves nothing behind. Offline, or on a bad
checksum, the error names the URL and the exact path where to put the file by hand.
"""

import dataclasses
import hashlib
import os
import urllib.error
import urllib.request

from alexnet_jax.runtime import cache
from alexnet_jax.weights import weight_files



@dataclasses.dataclass(frozen=True)
class Published:
  description: str
  url: str
  sha256_prefix: str  # The leading hex digits of the file's SHA-256 that the publisher states.

  @property
  def file_name(self) -> str:
    return self.url.rsplit('/', 1)[-1]


# torchvision's ImageNet-trained AlexNet (the one-tower layout, configs/torchvision_alexnet.py),
# at the address and with the checksum prefix torchvision's model registry gives.
PUBLISHED = {
    'torchvision': Published(
        "torchvision's ImageNet AlexNet (233 MB)",
        'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth', '7be5be79'),
}


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      h.update(chunk)
  return h.hexdigest()


def _fetch(published: Published, target: str) -> None:
  """Downloads `published` to `target` atomically, its checksum checked."""
  partial = f'{target}.{os.getpid()}.partial'
  by_hand = (f'Download it yourself (e.g. curl -L -o {target} {published.url}) and rerun, or '
             'give model.pretrained as the path of a copy you have.')
  try:
    print(f'Downloading {published.description} from {published.url} to {target} ...',
          flush=True)
    h, size = hashlib.sha256(), 0
    with urllib.request.urlopen(published.url, timeout=60) as response, \
        open(partial, 'wb') as out:
      for chunk in iter(lambda: response.read(1 << 20), b''):
        h.update(chunk)
        out.write(chunk)
        size += len(chunk)
      expected = int(response.headers.get('Content-Length') or size)
    if size != expected:
      raise OSError(f'the connection closed after {size:,} of {expected:,} bytes')
    digest = h.hexdigest()
    if not digest.startswith(published.sha256_prefix):
      raise weight_files.WeightFileError(
          f'The file downloaded from {published.url} has SHA-256 {digest[:16]}..., not '
          f'{published.sha256_prefix}... as published: the download was corrupted or '
          f'changed on the way, and it was not kept. {by_hand}')
    os.replace(partial, target)
  except (OSError, urllib.error.URLError, ValueError) as e:
    if isinstance(e, weight_files.WeightFileError):
      raise
    raise weight_files.WeightFileError(
        f'Could not download {published.description} from {published.url} ({e}); nothing '
        f'was kept. {by_hand}') from e
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def resolve(name_or_path: str) -> str:
  """The file for model.pretrained: a published name fetched into the cache, else the path."""
  published = PUBLISHED.get(name_or_path)
  if published is None:
    return os.path.expanduser(name_or_path)
  target = os.path.join(cache.cache_dir(), published.file_name)
  if not os.path.isfile(target):
    os.makedirs(cache.cache_dir(), exist_ok=True)
    _fetch(published, target)
  return target
