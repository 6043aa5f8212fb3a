"""eqx_vae: the KL autoencoder (AutoencoderKL) of Stable Diffusion, SDXL, SD3 and Flux in Equinox."""

from ._autoencoder import (
    AutoencoderKL as AutoencoderKL,
)
from ._autoencoder import (
    decode as decode,
)
from ._autoencoder import (
    encode as encode,
)
from ._autoencoder import (
    reconstruct as reconstruct,
)
from ._blocks import (
    DownEncoderBlock2D as DownEncoderBlock2D,
)
from ._blocks import (
    UNetMidBlock2D as UNetMidBlock2D,
)
from ._blocks import (
    UpDecoderBlock2D as UpDecoderBlock2D,
)
from ._checkpoint import (
    from_pretrained as from_pretrained,
)
from ._checkpoint import (
    model_to_state_dict as model_to_state_dict,
)
from ._checkpoint import (
    named_parameters as named_parameters,
)
from ._checkpoint import (
    save_pretrained as save_pretrained,
)
from ._compile_cache import enable_compilation_cache as enable_compilation_cache
from ._config import AutoencoderKLConfig as AutoencoderKLConfig
from ._decoder import Decoder as Decoder
from ._default import load_default as load_default
from ._default import sample_image_path as sample_image_path
from ._distribution import DiagonalGaussianDistribution as DiagonalGaussianDistribution
from ._encoder import Encoder as Encoder
from ._format_flax import from_flax_params as from_flax_params
from ._format_ldm import diffusers_to_ldm_state_dict as diffusers_to_ldm_state_dict
from ._images import read_image as read_image
from ._images import write_image as write_image
from ._latents import from_diffusion_latents as from_diffusion_latents
from ._latents import to_diffusion_latents as to_diffusion_latents
from ._layers import (
    AttentionBlock as AttentionBlock,
)
from ._layers import (
    Downsample2D as Downsample2D,
)
from ._layers import (
    ResnetBlock2D as ResnetBlock2D,
)
from ._layers import (
    Upsample2D as Upsample2D,
)
from ._nn import Conv2d as Conv2d
from ._nn import GroupNorm as GroupNorm
from ._nn import Linear as Linear
from ._precision import (
    upcast_for_decode as upcast_for_decode,
)
from ._precision import (
    with_compute_dtype as with_compute_dtype,
)
from ._precision import (
    with_config as with_config,
)
from ._presets import PRESET_NAMES as PRESET_NAMES
from ._presets import preset_config as preset_config
from ._remat import with_remat as with_remat
from ._sharding import (
    data_parallel_decode as data_parallel_decode,
)
from ._sharding import (
    data_parallel_encode as data_parallel_encode,
)
from ._sharding import (
    spatial_decode as spatial_decode,
)
from ._sharding import (
    spatial_encode as spatial_encode,
)
from ._slicing import sliced_decode as sliced_decode
from ._slicing import sliced_encode as sliced_encode
from ._tiling import tiled_decode as tiled_decode
from ._tiling import tiled_encode as tiled_encode

__version__ = "0.1.0"
