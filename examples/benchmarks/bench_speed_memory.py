"""Peak memory of one encode or decode call, measured in a fresh process (used by bench_speed.py).

    python bench_speed_memory.py {ours,torch} {encode,decode} SIZE {float32,bfloat16} MODEL_DIR [CONV_ALGORITHM]

Prints one JSON line: the RSS high-water mark (MiB) after loading the model and after the call, and, for eqx_vae,
XLA's `memory_analysis` of the compiled function (temp buffers, arguments, outputs).
"""

import json
import sys

import numpy as np


def rss_high_water_mib() -> float:
    """VmHWM of this process (Linux). Unlike getrusage's ru_maxrss it is not inherited from the parent across exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # KiB -> MiB
    return float("nan")


def main() -> None:
    framework, op, size, dtype, directory = sys.argv[1:6]
    conv_algorithm = sys.argv[6] if len(sys.argv) > 6 else "auto"
    size = int(size)
    shape = (1, 3, size, size) if op == "encode" else (1, 4, size // 8, size // 8)
    x_np = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    result = {"framework": framework, "op": op, "size": size, "dtype": dtype}
    if framework == "ours":
        import jax
        import jax.numpy as jnp

        import eqx_vae

        model = eqx_vae.from_pretrained(directory, dtype=dtype)
        model = eqx_vae.with_conv_backend(model, eqx_vae.nn.conv_backend_named(conv_algorithm))
        x = jnp.asarray(x_np, dtype=dtype)
        result["loaded_rss_mib"] = rss_high_water_mib()
        run = eqx_vae.encode if op == "encode" else eqx_vae.decode
        jax.block_until_ready(run(model, x))
        result["peak_rss_mib"] = rss_high_water_mib()
        try:
            from eqx_vae.inference._batched import decode_batch, encode_batch

            inner = encode_batch if op == "encode" else decode_batch
            compiled = inner.lower(model, x).compile()
            analysis = getattr(compiled, "compiled", compiled).memory_analysis()  # equinox wraps jax's Compiled
            mib = 1 / 2**20
            result["xla_temp_mib"] = analysis.temp_size_in_bytes * mib
            result["xla_argument_mib"] = analysis.argument_size_in_bytes * mib
            result["xla_output_mib"] = analysis.output_size_in_bytes * mib
        except Exception as error:  # memory_analysis is best effort: not every backend or version has it
            result["xla_memory_analysis_error"] = repr(error)
    else:
        import torch
        from diffusers import AutoencoderKL

        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        model = AutoencoderKL.from_pretrained(directory, torch_dtype=torch_dtype).eval()
        x = torch.from_numpy(x_np).to(torch_dtype)
        result["loaded_rss_mib"] = rss_high_water_mib()
        with torch.inference_mode():
            model.encode(x) if op == "encode" else model.decode(x)
        result["peak_rss_mib"] = rss_high_water_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
