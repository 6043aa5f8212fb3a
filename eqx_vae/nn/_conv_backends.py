"""How a `Conv2d` computes: XLA's convolution, channel-major matmuls with Winograd, or each where it pays.

A backend is a module with no parameters that a `Conv2d` holds as its `backend` field. Every backend computes the
same three things, the last two fused where it pays:

- `conv(x)`: the convolution of `x`, zero-padded by `padding`;
- `conv_of_activated(x, activation)`: the convolution of `activation(x)` (a resnet's norm -> activation -> conv);
- `conv_of_upsampled(x)`: the convolution of the nearest-neighbour 2x upsampling of `x` (the decoder's upsamplers).

A model's convs use `AutoConv` unless told otherwise; switch a loaded model with
`eqx_vae.with_conv_backend(model, eqx_vae.XlaConv())` (or `WinogradConv()`).

Images stay `(channels, height, width)` between layers whatever the backend. A backend that computes channels-last
says so (`computes_channels_last`), and the GroupNorm before it then computes channels-last too: the transposes
between the two cancel, so XLA keeps the activations channels-last from one conv to the next.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._canonical_conv import canonical_conv, conv_out_size
from ._conv_work import add_conv_work
from ._layout import Kernel, to_channels_first, to_channels_last
from ._matmul_conv import (
    activated_winograd_conv3x3,
    add_bias,
    matmul_conv,
    upsample_conv3x3,
    uses_matmuls,
    uses_winograd,
)

Padding = tuple[tuple[int, int], tuple[int, int]]
Image = Float[Array, "in_channels height width"]
Weight = Kernel  # `Conv2d.weight`'s layout, `(kh, kw, in, out)`
Output = Float[Array, "out_channels out_height out_width"]
Bias = Float[Array, " out_channels"] | None


def upsample_nearest_2x(x: Float[Array, "channels height width"]) -> Float[Array, "channels 2*height 2*width"]:
    """Nearest-neighbour 2x upsampling (`F.interpolate(scale_factor=2.0, mode="nearest")`)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class AbstractConvBackend(eqx.Module):
    """The algorithm of a `Conv2d`. `x`, `weight` and `bias` arrive in the compute dtype; a backend adds the bias
    (when not None) where it costs least.
    """

    @abc.abstractmethod
    def conv(self, x: Image, weight: Weight, *, stride: int, padding: Padding, bias: Bias = None) -> Output:
        """The convolution of `x` zero-padded by `padding`, with `stride`, plus `bias`."""

    @abc.abstractmethod
    def conv_of_activated(
        self,
        x: Image,
        weight: Weight,
        *,
        stride: int,
        padding: Padding,
        activation: Callable[[Array], Array],
        bias: Bias = None,
    ) -> Output:
        """`conv(activation(x))`; `activation(0)` must be 0."""

    @abc.abstractmethod
    def conv_of_upsampled(
        self, x: Image, weight: Weight, *, stride: int, padding: Padding, bias: Bias = None
    ) -> Output:
        """`conv(upsample_nearest_2x(x))`, `padding` in upsampled pixels."""

    def computes_channels_last(self, x: Image, weight: Weight, *, stride: int, padding: Padding) -> bool:
        """Whether `conv` and `conv_of_activated` of `x` compute on the channels-last image, so that a GroupNorm
        before them should too."""
        return False

    def activates_in_float32(self, x: Image, weight: Weight, *, stride: int, padding: Padding) -> bool:
        """Whether `conv_of_activated` of `x` takes it in float32 (or wider) when the compute dtype is narrower, and
        rounds to the compute dtype only after its own arithmetic on the activation: a GroupNorm before it should
        then hand over its float32 result unrounded."""
        return False


def _xla_conv_channels_first(x: Image, weight: Weight, stride: int, padding: Padding) -> Array:
    """XLA's convolution of one `(channels, height, width)` image, output in the same layout."""
    return jax.lax.conv_general_dilated(
        x[None], weight, (stride, stride), padding, dimension_numbers=("NCHW", "HWIO", "NCHW")
    )[0]


class XlaConv(AbstractConvBackend):
    """XLA's convolution (`lax.conv_general_dilated`): quick to compile, exact.

    `channels_last` (the default) runs it on the `(height, width, channels)` image, transposed in and out, with the
    activation and the upsampling computed channels-last as well. XLA's CPU convolution works channels-last, so a
    channels-first conv is transposed in and out anyway; written channels-last, with the GroupNorms before the
    convs computing channels-last too, those transposes cancel between layers. An SD-size decode at 256 px took
    1.73 s against 2.02 s channels-first, with the same results to rounding. Channels-last convs and their
    gradients are written in the one form XLA's fast CPU kernel takes (`canonical_conv`), so they keep that kernel
    inside `lax.map`, `lax.scan` and `fori_loop` bodies too, where XLA rewrites nothing. `channels_last=False`
    convolves the `(channels, height, width)` image as it lies; inside a loop body on CPU that is a naive loop.
    """

    channels_last: bool = eqx.field(static=True, default=True)

    def _conv_channels_last(
        self, x: Float[Array, "height width in_channels"], weight: Weight, stride: int, padding: Padding, bias: Bias
    ) -> Output:
        out = canonical_conv(x[None], weight, stride, padding)[0]
        return to_channels_first(out if bias is None else out + bias[None, None, :])

    def computes_channels_last(self, x: Image, weight: Weight, *, stride: int, padding: Padding) -> bool:
        return self.channels_last

    def conv(self, x: Image, weight: Weight, *, stride: int, padding: Padding, bias: Bias = None) -> Output:
        if self.channels_last:
            return self._conv_channels_last(to_channels_last(x), weight, stride, padding, bias)
        return add_bias(_xla_conv_channels_first(x, weight, stride, padding), bias)

    def conv_of_activated(
        self,
        x: Image,
        weight: Weight,
        *,
        stride: int,
        padding: Padding,
        activation: Callable[[Array], Array],
        bias: Bias = None,
    ) -> Output:
        if self.channels_last:
            return self._conv_channels_last(activation(to_channels_last(x)), weight, stride, padding, bias)
        return self.conv(activation(x), weight, stride=stride, padding=padding, bias=bias)

    def conv_of_upsampled(
        self, x: Image, weight: Weight, *, stride: int, padding: Padding, bias: Bias = None
    ) -> Output:
        if self.channels_last:
            return self._conv_channels_last(to_channels_last(upsample_nearest_2x(x)), weight, stride, padding, bias)
        return self.conv(upsample_nearest_2x(x), weight, stride=stride, padding=padding, bias=bias)


def _with_xla_derivative(
    value: Callable[[Image, Weight, Bias], Output], derivative: Callable[[Image, Weight, Bias], Output]
) -> Callable[[Image, Weight, Bias], Output]:
    """A conv whose value is `value(x, weight, bias)` and whose derivatives are those of `derivative`, the same conv
    written with XLA's convolution (`XlaConv`).

    Differentiated through Winograd's matmuls, reverse mode keeps each conv's transformed input (4x the image) for
    the backward pass, and its weight gradients are matmuls over all pixels. With XLA's derivative it keeps what
    `XlaConv` keeps and runs `XlaConv`'s gradient convolutions, while the forward pass stays Winograd's.
    """

    @jax.custom_jvp
    def conv(x, weight, bias):
        return value(x, weight, bias)

    @conv.defjvp
    def conv_jvp(primals, tangents):
        out = conv(*primals)
        _, out_dot = jax.jvp(derivative, primals, tangents)
        return out, out_dot.astype(out.dtype)

    return conv


def _is_same_size_3x3(weight: Weight, stride: int, padding: Padding) -> bool:
    return tuple(weight.shape[:2]) == (3, 3) and stride == 1 and padding == ((1, 1), (1, 1))


class WinogradConv(AbstractConvBackend):
    """Convolutions as `(out, in) @ (in, pixels)` matmuls on the channel-major image, never transposed.

    3x3 stride-1 convs use Winograd F(2x2, 3x3) (2.25x fewer multiplies), with the activation computed inside on the
    input's 2x2 phases; nearest 2x upsampling + 3x3 conv is four 2x2 convs of the small image; strided and 1x1 convs
    are one matmul per tap. Convs with fewer than `MATMUL_MIN_CHANNELS` channels in or out (an image's 3, a latent's
    4) use XLA's convolution, which is faster for them. Faster than `XlaConv` on CPU, several times longer to compile.
    The derivatives are `XlaConv`'s (`_with_xla_derivative`): the same gradients, and no more memory kept for them.

    A Winograd or upsampler conv whose input channels x output pixels exceed `band_elements` runs in row bands of at
    most that size, one after another, so its temporaries stay about `16 * band_elements` bytes in float32 (1 GiB by
    default) whatever the image size. The default leaves every conv of an SD-size decode at 512 px whole; at 2048 px
    the bands cut XLA's plan from 23.0 to 10.5 GiB, below `XlaConv`'s 14.0. `None` never bands.
    """

    band_elements: int | None = eqx.field(static=True, default=2**26)

    def conv(self, x: Image, weight: Weight, *, stride: int, padding: Padding, bias: Bias = None) -> Output:
        xla = lambda x, weight, bias: XlaConv().conv(x, weight, stride=stride, padding=padding, bias=bias)  # noqa: E731
        if not uses_matmuls(weight.shape):
            return xla(x, weight, bias)
        matmuls = lambda x, weight, bias: matmul_conv(  # noqa: E731
            jnp.pad(x, ((0, 0), *padding)), weight, stride, bias, self.band_elements
        )
        return _with_xla_derivative(matmuls, xla)(x, weight, bias)

    def conv_of_activated(
        self,
        x: Image,
        weight: Weight,
        *,
        stride: int,
        padding: Padding,
        activation: Callable[[Array], Array],
        bias: Bias = None,
    ) -> Output:
        if not self.activates_in_float32(x, weight, stride=stride, padding=padding):
            return self.conv(activation(x), weight, stride=stride, padding=padding, bias=bias)
        winograd = lambda x, weight, bias: activated_winograd_conv3x3(  # noqa: E731
            x, weight, activation, bias, self.band_elements
        )
        xla = lambda x, weight, bias: XlaConv().conv_of_activated(  # noqa: E731
            x.astype(weight.dtype), weight, stride=stride, padding=padding, activation=activation, bias=bias
        )
        return _with_xla_derivative(winograd, xla)(x, weight, bias)

    def activates_in_float32(self, x: Image, weight: Weight, *, stride: int, padding: Padding) -> bool:
        # The fused Winograd conv: its activation and input transforms run in float32 and round once, to the
        # compute dtype, for the products. In bfloat16 an SD-size decode at 256 px ran in 0.94x the time of rounding
        # the norm's and the activation's outputs and compiled 0.5 s sooner (docs/conv_backends.md).
        padded_height, padded_width = x.shape[1] + 2, x.shape[2] + 2
        same_size = _is_same_size_3x3(weight, stride, padding)
        return same_size and uses_winograd(weight.shape, 1, padded_height, padded_width)

    def conv_of_upsampled(
        self, x: Image, weight: Weight, *, stride: int, padding: Padding, bias: Bias = None
    ) -> Output:
        if not (_is_same_size_3x3(weight, stride, padding) and uses_matmuls(weight.shape)):
            return self.conv(upsample_nearest_2x(x), weight, stride=stride, padding=padding, bias=bias)
        sub_pixel = lambda x, weight, bias: upsample_conv3x3(  # noqa: E731
            jnp.pad(x, ((0, 0), (1, 1), (1, 1))), weight, bias, self.band_elements
        )
        xla = lambda x, weight, bias: XlaConv().conv_of_upsampled(  # noqa: E731
            x, weight, stride=stride, padding=padding, bias=bias
        )
        return _with_xla_derivative(sub_pixel, xla)(x, weight, bias)


def conv_gflop(weight_shape: tuple[int, ...], out_height: int, out_width: int) -> float:
    """GFLOP of one conv of one image (a multiply-add counts 2)."""
    kernel_height, kernel_width, in_channels, out_channels = weight_shape
    return 2 * out_channels * in_channels * kernel_height * kernel_width * out_height * out_width / 1e9


def _conv_work_gflop(x: Image, weight: Weight, stride: int, padding: Padding, upsampled: bool) -> float:
    """GFLOP of XLA's direct conv of `x` (upsampled 2x first if `upsampled`) with `weight`."""
    scale = 2 if upsampled else 1
    out_height = conv_out_size(scale * x.shape[1], padding[0], weight.shape[0], stride)
    out_width = conv_out_size(scale * x.shape[2], padding[1], weight.shape[1], stride)
    return conv_gflop(weight.shape, out_height, out_width)


class AutoConv(AbstractConvBackend):
    """`WinogradConv` where it pays, `XlaConv` elsewhere: the default backend. On other platforms than CPU, always
    `XlaConv`.

    On CPU, an encode or decode of one image whose convs add up to between `call_min_gflop` and `call_max_gflop`
    GFLOP runs every conv with `WinogradConv` (the autoencoder settles this per call, `call_with_auto_conv`). Any other
    call picks per conv: an upsampler's conv (nearest 2x + 3x3) of at least `upsample_min_gflop` GFLOP runs as
    Winograd's sub-pixel conv, any other conv of at least `conv_min_gflop` GFLOP (a strided one counted at stride 1)
    as Winograd matmuls, and the rest with XLA's convolution.

    With the defaults, SD-size decodes and encodes from 512 px (2470 and 1070 GFLOP) up run on Winograd: about half
    the time of XLA's convs, with a first call as quick for the decode and about 2 s longer for the encode, and no
    more memory (its large convs run in row bands, `WinogradConv.band_elements`). Smaller calls stay with XLA, whose
    first call is several seconds shorter. Mixing the two backends within one call cost more than it saved.
    `call_max_gflop` (no limit by default) sends calls above it back to XLA.

    `bfloat16_call_min_gflop` replaces `call_min_gflop` for a call whose convs all compute in bfloat16 on a CPU that
    multiplies bfloat16 in hardware (AVX512-BF16 or AMX; None: no difference). There XLA's convolution runs bfloat16
    no faster than float32, while the Winograd products use those instructions, so the SD-size decode and encode
    from 256 px (620 and 270 GFLOP) go to Winograd as well.

    Repeated calls: once the top-level calls of one shape (`eqx_vae.decode` and the other entry points, on concrete
    arrays), each of at least `repeated_call_min_gflop` per image, have run `repeated_call_gflop` of conv work on the
    per-conv rules, the calls after them run every AutoConv as `WinogradConv`: one longer compile, then faster calls
    (on 2 cores an SD-size decode at 256 px switches at its eighth call, an encode at its sixteenth). None means
    2000 GFLOP per usable CPU core, as more cores run the calls faster but not the compile. Networks with 3x3 convs
    narrower than 96 channels stay on XLA. The `eqx_vae` logger reports each switch at INFO level.
    `repeated_call_gflop=inf` turns this off.
    """

    call_min_gflop: float = eqx.field(static=True, default=1000.0)
    call_max_gflop: float = eqx.field(static=True, default=float("inf"))
    bfloat16_call_min_gflop: float | None = eqx.field(static=True, default=250.0)
    upsample_min_gflop: float = eqx.field(static=True, default=250.0)
    conv_min_gflop: float = eqx.field(static=True, default=float("inf"))
    repeated_call_min_gflop: float = eqx.field(static=True, default=250.0)
    repeated_call_gflop: float | None = eqx.field(static=True, default=None)

    def _pick(self, x: Image, weight: Weight, stride: int, padding: Padding, upsampled: bool = False):
        # A strided conv is judged by its work at stride 1, so a downsampler goes where the convs of its level go.
        threshold = self.upsample_min_gflop if upsampled else self.conv_min_gflop
        large = _conv_work_gflop(x, weight, 1, padding, upsampled) >= threshold
        return WinogradConv() if large and jax.default_backend() == "cpu" else XlaConv()

    def _count(self, x: Image, weight: Weight, stride: int, padding: Padding, upsampled: bool = False) -> None:
        """Adds this conv's work, as XLA's direct conv, to the call being counted (`counting_conv_work`)."""
        add_conv_work(_conv_work_gflop(x, weight, stride, padding, upsampled))

    def computes_channels_last(self, x: Image, weight: Weight, *, stride: int, padding: Padding) -> bool:
        return self._pick(x, weight, stride, padding).computes_channels_last(x, weight, stride=stride, padding=padding)

    def activates_in_float32(self, x: Image, weight: Weight, *, stride: int, padding: Padding) -> bool:
        return self._pick(x, weight, stride, padding).activates_in_float32(x, weight, stride=stride, padding=padding)

    def conv(self, x: Image, weight: Weight, *, stride: int, padding: Padding, bias: Bias = None) -> Output:
        self._count(x, weight, stride, padding)
        return self._pick(x, weight, stride, padding).conv(x, weight, stride=stride, padding=padding, bias=bias)

    def conv_of_activated(
        self,
        x: Image,
        weight: Weight,
        *,
        stride: int,
        padding: Padding,
        activation: Callable[[Array], Array],
        bias: Bias = None,
    ) -> Output:
        self._count(x, weight, stride, padding)
        backend = self._pick(x, weight, stride, padding)
        return backend.conv_of_activated(x, weight, stride=stride, padding=padding, activation=activation, bias=bias)

    def conv_of_upsampled(
        self, x: Image, weight: Weight, *, stride: int, padding: Padding, bias: Bias = None
    ) -> Output:
        self._count(x, weight, stride, padding, upsampled=True)
        backend = self._pick(x, weight, stride, padding, upsampled=True)
        return backend.conv_of_upsampled(x, weight, stride=stride, padding=padding, bias=bias)


CONV_ALGORITHMS = {"auto": AutoConv, "direct": XlaConv, "winograd": WinogradConv}


def conv_backend_named(name: str) -> AbstractConvBackend:
    """The backend of a conv algorithm's name: `"auto"` (`AutoConv`), `"direct"` (`XlaConv`) or `"winograd"`."""
    if name not in CONV_ALGORITHMS:
        raise ValueError(f"unknown conv algorithm {name!r}; choose one of {sorted(CONV_ALGORITHMS)}")
    return CONV_ALGORITHMS[name]()
