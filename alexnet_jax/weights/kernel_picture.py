"""The picture of the paper's Figure 3: first-layer kernels drawn as small RGB images.

One job: an HWIO array of RGB kernels `(h, w, 3, n)` in, a uint8 RGB picture out. The
kernels of each tower are consecutive along O (the model's layout, model.py), and each
tower gets its own block of rows, tower 1 on top: Figure 3 shows the 48 kernels of GPU 1
above the 48 of GPU 2, in rows of 16 (3 rows per tower).

One contrast scale for all kernels, so that their strengths compare: weight 0 is mid-grey
and the largest |weight| of any kernel reaches black or white (each of R, G, B on its own).
Each kernel pixel is drawn as `zoom` x `zoom` picture pixels, and the kernels are
separated by thin white lines; a wider band separates the towers.

Pure numpy, so the training loop can draw it at every evaluation (train.py, TensorBoard)
and experiments/conv1_kernels.py can write it as a PNG.
"""

import numpy as np

COLUMNS = 16  # Figure 3: 16 kernels to a row.
ZOOM = 4  # Picture pixels per kernel pixel (an 11x11 kernel becomes 44x44).
BORDER = 1  # The white line between kernels, in picture pixels.
TOWER_GAP = 3  # Extra white rows between the towers' blocks.
_WHITE = 255


def kernel_grid(kernels: np.ndarray, towers: int = 1, *, columns: int = COLUMNS,
                zoom: int = ZOOM) -> np.ndarray:
  """Draws `kernels` (h, w, 3, n), HWIO, as a uint8 `(height, width, 3)` picture.

  `towers`: how many towers the n kernels belong to (n / towers each, consecutive along
  O); each tower's kernels fill rows of `columns` (fewer if a tower has fewer kernels),
  left to right, tower 1's rows on top.
  """
  kernels = np.asarray(kernels, np.float32)
  if kernels.ndim != 4 or kernels.shape[2] != 3:
    raise ValueError(f'kernels has shape {kernels.shape}: expected HWIO (h, w, 3, n), '
                     'the RGB kernels of a first layer (for a PyTorch OIHW array, '
                     'transpose it with .transpose(2, 3, 1, 0)).')
  h, w, _, n = kernels.shape
  if towers < 1 or n % towers:
    raise ValueError(f'towers={towers} does not divide the {n} kernels: give the number '
                     'of towers the layer has (model.towers).')
  if columns < 1 or zoom < 1:
    raise ValueError(f'columns={columns}, zoom={zoom}: both must be at least 1.')
  per_tower = n // towers
  columns = min(columns, per_tower)
  rows = -(-per_tower // columns)
  scale = np.abs(kernels).max()
  shades = 127.5 + 127.5 * kernels / scale if scale > 0 else np.full(kernels.shape, 127.5)
  shades = np.round(shades).astype(np.uint8)
  cell_h, cell_w = h * zoom + BORDER, w * zoom + BORDER
  block_h = rows * cell_h
  picture = np.full((BORDER + towers * block_h + (towers - 1) * TOWER_GAP,
                     BORDER + columns * cell_w, 3), _WHITE, np.uint8)
  for i in range(n):
    tower, j = divmod(i, per_tower)
    row, column = divmod(j, columns)
    top = BORDER + tower * (block_h + TOWER_GAP) + row * cell_h
    left = BORDER + column * cell_w
    enlarged = shades[:, :, :, i].repeat(zoom, axis=0).repeat(zoom, axis=1)
    picture[top:top + h * zoom, left:left + w * zoom] = enlarged
  return picture
