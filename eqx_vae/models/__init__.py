"""The VAE families: configs, presets, layers, blocks, encoder, decoder, autoencoder, posterior, latent scaling."""

from ._attention import AttentionBlock as AttentionBlock
from ._autoencoder import AutoencoderKL as AutoencoderKL
from ._blocks import DownEncoderBlock2D as DownEncoderBlock2D
from ._blocks import UNetMidBlock2D as UNetMidBlock2D
from ._blocks import UpDecoderBlock2D as UpDecoderBlock2D
from ._config import AutoencoderKLConfig as AutoencoderKLConfig
from ._decoder import Decoder as Decoder
from ._encoder import Encoder as Encoder
from ._latents import from_diffusion_latents as from_diffusion_latents
from ._latents import to_diffusion_latents as to_diffusion_latents
from ._posterior import DiagonalGaussianDistribution as DiagonalGaussianDistribution
from ._presets import PRESET_NAMES as PRESET_NAMES
from ._presets import preset_config as preset_config
from ._resampling import Downsample2D as Downsample2D
from ._resampling import Upsample2D as Upsample2D
from ._resnet import ResnetBlock2D as ResnetBlock2D
from ._transforms import upcast_for_decode as upcast_for_decode
from ._transforms import with_compute_dtype as with_compute_dtype
from ._transforms import with_conv_backend as with_conv_backend
from ._transforms import with_param_dtype as with_param_dtype
from ._transforms import with_remat as with_remat
from ._transforms import with_spatial_axis as with_spatial_axis
