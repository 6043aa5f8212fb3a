"""Checkpoints: every format -> one diffusers-named state dict -> the model; saving in diffusers' layout."""

from ._default import default_model_path as default_model_path
from ._default import load_default as load_default
from ._default import sample_image_path as sample_image_path
from ._format_flax import from_flax_params as from_flax_params
from ._format_ldm import diffusers_to_ldm_state_dict as diffusers_to_ldm_state_dict
from ._pretrained import from_pretrained as from_pretrained
from ._pretrained import save_pretrained as save_pretrained
from ._state_dict import model_to_state_dict as model_to_state_dict
from ._state_dict import named_parameters as named_parameters
