"""eqx_vae: the KL autoencoder (AutoencoderKL) of Stable Diffusion, SDXL, SD3 and Flux in Equinox."""

from ._autoencoder import (
    AutoencoderKL as AutoencoderKL,
    decode as decode,
    encode as encode,
    reconstruct as reconstruct,
)
from ._blocks import (
    DownEncoderBlock2D as DownEncoderBlock2D,
    UNetMidBlock2D as UNetMidBlock2D,
    UpDecoderBlock2D as UpDecoderBlock2D,
)
from ._checkpoint import (
    from_pretrained as from_pretrained,
    model_to_state_dict as model_to_state_dict,
    named_parameters as named_parameters,
    save_pretrained as save_pretrained,
)
from ._compile_cache import enable_compilation_cache as enable_compilation_cache
from ._config import AutoencoderKLConfig as AutoencoderKLConfig
from ._decoder import Decoder as Decoder
from ._default import load_default as load_default, sample_image_path as sample_image_path
from ._distribution import DiagonalGaussianDistribution as DiagonalGaussianDistribution
from ._encoder import Encoder as Encoder
from ._images import read_image as read_image, write_image as write_image
from ._layers import (
    AttentionBlock as AttentionBlock,
    Downsample2D as Downsample2D,
    ResnetBlock2D as ResnetBlock2D,
    Upsample2D as Upsample2D,
)
from ._format_flax import from_flax_params as from_flax_params
from ._format_ldm import diffusers_to_ldm_state_dict as diffusers_to_ldm_state_dict
from ._latents import from_diffusion_latents as from_diffusion_latents, to_diffusion_latents as to_diffusion_latents
from ._nn import Conv2d as Conv2d, GroupNorm as GroupNorm, Linear as Linear
from ._presets import PRESET_NAMES as PRESET_NAMES, preset_config as preset_config
from ._precision import (
    upcast_for_decode as upcast_for_decode,
    with_compute_dtype as with_compute_dtype,
    with_config as with_config,
)
from ._remat import with_remat as with_remat
from ._sharding import (
    data_parallel_decode as data_parallel_decode,
    data_parallel_encode as data_parallel_encode,
    spatial_decode as spatial_decode,
    spatial_encode as spatial_encode,
)
from ._slicing import sliced_decode as sliced_decode, sliced_encode as sliced_encode
from ._tiling import tiled_decode as tiled_decode, tiled_encode as tiled_encode

__version__ = "0.1.0"
