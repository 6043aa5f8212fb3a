"""Peak memory of loading an SD-size VAE checkpoint, against the size of one copy of its weights.

Writes a random SD-size diffusers AutoencoderKL (block_out_channels (128, 256, 512, 512), layers_per_block 2: the
architecture of sd-vae-ft-mse / SDXL's VAE) to a temporary folder, as a diffusers folder and as an LDM single file,
then loads each in a fresh subprocess and reports the peak resident set size above the process's peak before
loading (after importing everything and warming JAX up). The peak is VmHWM from /proc/self/status, the peak RSS of
the process image: `resource.getrusage().ru_maxrss` is carried over from the parent across exec on Linux, so a child
of this (large) parent would start at the parent's peak. diffusers' own `AutoencoderKL.from_pretrained` is measured
the same way, for comparison. Target: eqx_vae holds at most about two copies of the weights at once.

    python examples/benchmarks/bench_load_memory.py [--repeats 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys
import numpy as np

def peak_bytes():
    # The peak RSS of this process image: VmHWM. (ru_maxrss would do, but Linux carries it over from the parent
    # across fork + exec, so a child of a big parent starts with the parent's peak.)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

kind, path, param_dtype = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "diffusers":
    import torch, diffusers
    torch.zeros(1) + 1
    before = peak_bytes()
    model = diffusers.AutoencoderKL.from_pretrained(path, torch_dtype=getattr(torch, param_dtype))
    after = peak_bytes()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
else:
    import jax, jax.numpy as jnp, eqx_vae
    jnp.zeros(1).block_until_ready()
    eqx_vae.preset_config("sd-vae-ft-mse")  # import-time work done before measuring
    before = peak_bytes()
    model = eqx_vae.from_pretrained(path, param_dtype=param_dtype)
    jax.block_until_ready(jax.tree_util.tree_leaves(eqx_vae.named_parameters(model)))
    after = peak_bytes()
    params = sum(v.nbytes for v in eqx_vae.named_parameters(model).values())
print(json.dumps({"before": before, "after": after, "params": params}))
"""


def measure(kind: str, path: str, param_dtype: str) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", CHILD, kind, path, param_dtype],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"},
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from safetensors.numpy import save_file

    import eqx_vae

    config = eqx_vae.preset_config("sd-vae-ft-mse")
    kwargs = {k: v for k, v in config.to_dict().items() if not k.startswith("_")}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "vae")
        fp16_folder = os.path.join(root, "vae-fp16")
        reference = AutoencoderKL(**kwargs)
        reference.save_pretrained(folder)
        reference.half().save_pretrained(fp16_folder)
        state = {k: v.float().numpy() for k, v in reference.state_dict().items()}
        ldm_file = os.path.join(root, "sd-vae-ft-mse-ldm.safetensors")
        save_file(eqx_vae.diffusers_to_ldm_state_dict(state, prefix="first_stage_model."), ldm_file)
        weights_fp32 = sum(v.nbytes for v in state.values())
        del reference, state

        cases = [
            ("eqx_vae", "diffusers folder, float32 file -> float32", folder, "float32"),
            ("eqx_vae", "LDM single file, float32 -> float32", ldm_file, "float32"),
            ("eqx_vae", "diffusers folder, float16 file -> float32", fp16_folder, "float32"),
            ("eqx_vae", "diffusers folder, float32 file -> bfloat16", folder, "bfloat16"),
            ("diffusers", "diffusers folder, float32 file -> float32 (torch)", folder, "float32"),
        ]
        print(f"one copy of the float32 weights: {weights_fp32 / 2**20:.1f} MiB ({weights_fp32 // 4:,} parameters)")
        print(
            f"{'library':10s} {'case':52s} {'peak above baseline':>20s} {'/ loaded params':>16s}"
            f" {'/ fp32 weights':>14s}"
        )
        for kind, label, path, param_dtype in cases:
            runs = [measure(kind, path, param_dtype) for _ in range(args.repeats)]
            grown = statistics.median(r["after"] - r["before"] for r in runs)
            params = runs[0]["params"]
            print(
                f"{kind:10s} {label:52s} {grown / 2**20:17.1f} MiB {grown / params:15.2f}x "
                f"{grown / weights_fp32:13.2f}x"
            )
        print(f"(median of {args.repeats} fresh processes each; numpy {np.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
