"""Running a model: batched jitted encode / decode / reconstruct, padding, tiling, slicing, multi-device sharding."""

from ._batched import decode as decode
from ._batched import encode as encode
from ._batched import reconstruct as reconstruct
from ._compile_cache import enable_compilation_cache as enable_compilation_cache
from ._compiler_options import compiler_options as compiler_options
from ._padding import crop as crop
from ._padding import pad_to_multiple as pad_to_multiple
from ._sharding import data_parallel_decode as data_parallel_decode
from ._sharding import data_parallel_encode as data_parallel_encode
from ._sharding import spatial_decode as spatial_decode
from ._sharding import spatial_encode as spatial_encode
from ._slicing import sliced_decode as sliced_decode
from ._slicing import sliced_encode as sliced_encode
from ._tiling import tiled_decode as tiled_decode
from ._tiling import tiled_encode as tiled_encode
from ._tiny_tiling import decoder_receptive_field as decoder_receptive_field
from ._tiny_tiling import tiny_tiled_decode as tiny_tiled_decode
