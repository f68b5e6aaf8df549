"""weights/published_weights.py: published weights by name, from a test server on
127.0.0.1: checked, cached, atomic."""

import hashlib
import http.server
import os
import threading

import pytest

import torch_zip
from alexnet_jax.runtime import cache
from alexnet_jax.weights import pretrained, published_weights, weight_files


class _Server:
  """Serves `body` at /alexnet.pth; `cut` bytes short of its stated length when asked."""

  def __init__(self, body: bytes):
    self.body, self.cut, self.requests = body, 0, 0
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):  # pylint: disable=invalid-name
        server.requests += 1
        self.send_response(200)
        self.send_header('Content-Length', str(len(server.body)))
        self.end_headers()
        self.wfile.write(server.body[:len(server.body) - server.cut])

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/alexnet.pth'
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def served(tmp_path, monkeypatch, conv_arrays):
  torch_zip.write(str(tmp_path / 'source.pth'), conv_arrays())
  body = (tmp_path / 'source.pth').read_bytes()
  server = _Server(body)
  monkeypatch.setenv(cache.ENV, str(tmp_path / 'cache'))
  monkeypatch.setitem(published_weights.PUBLISHED, 'torchvision', published_weights.Published(
      'test weights', server.url, hashlib.sha256(body).hexdigest()[:8]))
  yield server
  server.httpd.shutdown()


def test_a_name_is_fetched_once_checked_and_loaded(
    served, tmp_path, torchvision_config, abstract_params):
  config = torchvision_config(63, path='torchvision')
  loaded = pretrained.load(config, abstract_params(config))
  assert loaded.path == str(tmp_path / 'cache' / 'alexnet.pth')
  assert list(loaded.params) == ['conv1', 'conv2', 'conv3', 'conv4', 'conv5']
  again = pretrained.load(config, abstract_params(config))
  assert again.path == loaded.path and served.requests == 1  # Cached.
  assert os.listdir(tmp_path / 'cache') == ['alexnet.pth']


def test_a_wrong_checksum_is_refused_and_nothing_cached(served, tmp_path, monkeypatch):
  monkeypatch.setitem(published_weights.PUBLISHED, 'torchvision', published_weights.Published(
      'test weights', served.url, '00000000'))
  with pytest.raises(weight_files.WeightFileError,
                     match=r'has SHA-256 [0-9a-f]{16}\.\.\., not 00000000\.\.\. as published.*'
                           r'not kept\. Download it yourself \(e\.g\. curl -L -o '
                           rf'{tmp_path}/cache/alexnet\.pth http://127\.0\.0\.1'):
    published_weights.resolve('torchvision')
  assert os.listdir(tmp_path / 'cache') == []


def test_a_cut_download_leaves_nothing_and_a_rerun_completes(served, tmp_path):
  served.cut = 1000
  with pytest.raises(weight_files.WeightFileError, match=r'Could not download test weights '
                     r'from http://127\.0\.0\.1:\d+/alexnet\.pth \(.*\); nothing was kept'):
    published_weights.resolve('torchvision')
  assert os.listdir(tmp_path / 'cache') == []
  served.cut = 0
  assert published_weights.resolve('torchvision') == str(tmp_path / 'cache' / 'alexnet.pth')


def test_offline_names_the_url_and_where_to_put_the_file(served, tmp_path, monkeypatch):
  served.httpd.shutdown()
  served.httpd.server_close()  # Nothing listens there now: as offline.
  with pytest.raises(weight_files.WeightFileError,
                     match=rf'Could not download .*curl -L -o {tmp_path}/cache/alexnet\.pth '
                           r'http://127\.0\.0\.1:\d+/alexnet\.pth\) and rerun'):
    published_weights.resolve('torchvision')


def test_a_path_is_taken_as_it_is(tmp_path):
  assert published_weights.resolve(str(tmp_path / 'mine.pth')) == str(tmp_path / 'mine.pth')
  assert published_weights.resolve('~/w.pth') == os.path.expanduser('~/w.pth')
