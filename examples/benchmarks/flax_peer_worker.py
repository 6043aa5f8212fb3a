"""diffusers 0.35.2's FlaxAutoencoderKL as a benchmark peer, run by the Flax peer venv's python.

Made by `make_flax_peer_venv.sh`; driven by `flax_peer.FlaxPeer` from eqx_vae's environment. It never imports eqx_vae.
One JSON request per stdin line, one JSON response per stdout line (`"ok": false` and `"error"` on failure); logs go
to stderr. Arrays travel as .npy files (NCHW float32).

    {"cmd": "load", "directory": DIR, "dtype": "float32" | "bfloat16"}
    {"cmd": "run", "op": "encode" | "decode", "input": X.npy, "output": Y.npy (optional)}
        -> {"seconds", "output", "first_call"}; encode gives the posterior mean, decode the image
    {"cmd": "grad", "shape": [n, c, h, w] | "input": X.npy, "repeats": k, "seed": s, "save_grads": G.npz (optional)}
        -> compile figures on the first request per shape (trace + compile + run of jax.jit(jax.grad(loss)), then an
           AOT lower/compile split) and the step times of k more calls; loss = MSE(decode(encode(x).mean), x)
    {"cmd": "versions"}, {"cmd": "quit"}

The model is used through its public API as a user would: `model.apply({"params": params}, x, method=model.encode)`
and `method=model.decode` under `jax.jit`. `from_pretrained(DIR, from_pt=True)` reads `diffusion_pytorch_model.bin`;
a folder with only safetensors weights is converted to that file in a temporary folder first. Params are cast to
the dtype asked for.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

UNSUPPORTED = {  # diffusers AutoencoderKL options the Flax model does not have, with the value it always assumes
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}


def log(*parts) -> None:
    print("[flax peer]", *parts, file=sys.stderr, flush=True)


def timed(fn):
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


class Worker:
    def __init__(self):
        self.scratch = tempfile.mkdtemp(prefix="flax-peer-")
        self.model = self.params = self.dtype = None
        self.functions = {}  # op -> jitted function
        self.seen = set()  # (op, shape, dtype) already called once
        self.grads = {}  # (shape, dtype) -> jitted grad
        self.outputs = 0
        self.converted = {}  # (safetensors file, its mtime) -> folder with the .bin weights

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def pytorch_folder(self, directory: str) -> str:
        """A folder `from_pretrained(..., from_pt=True)` can read: `directory`, or a copy with the .bin weights."""
        if os.path.isfile(os.path.join(directory, "diffusion_pytorch_model.bin")):
            return directory
        safetensors_file = os.path.join(directory, "diffusion_pytorch_model.safetensors")
        if not os.path.isfile(safetensors_file):
            raise FileNotFoundError(f"{directory} has neither diffusion_pytorch_model.bin nor .safetensors")
        key = (os.path.abspath(safetensors_file), os.path.getmtime(safetensors_file))
        if key not in self.converted:
            import torch
            from safetensors.torch import load_file

            folder = os.path.join(self.scratch, f"pytorch_weights_{len(self.converted)}")
            os.makedirs(folder)
            shutil.copy(os.path.join(directory, "config.json"), folder)
            torch.save(load_file(safetensors_file), os.path.join(folder, "diffusion_pytorch_model.bin"))
            self.converted[key] = folder
        return self.converted[key]

    def load(self, directory: str, dtype: str = "float32") -> dict:
        import jax
        import jax.numpy as jnp
        from diffusers import FlaxAutoencoderKL

        with open(os.path.join(directory, "config.json")) as file:
            config = json.load(file)
        if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
            raise ValueError(f"FlaxAutoencoderKL cannot load a {config['_class_name']}")
        for key, assumed in UNSUPPORTED.items():
            if config.get(key, assumed) != assumed:
                raise ValueError(f"FlaxAutoencoderKL has no {key}={config[key]!r}")
        jnp_dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
        start = time.perf_counter()
        model, params = FlaxAutoencoderKL.from_pretrained(self.pytorch_folder(directory), from_pt=True, dtype=jnp_dtype)
        # Params come in the file's dtype (the shipped default model stores float16): cast them to the one asked for.
        # (What the model's to_fp32 / to_bf16 do; those call jax.tree_map, which newer jax no longer has.)
        params = jax.tree_util.tree_map(
            lambda p: p.astype(jnp_dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params
        )
        self.model, self.params, self.dtype = model, params, dtype
        self.functions, self.seen, self.grads = {}, set(), {}
        return {"seconds": time.perf_counter() - start, "latent_channels": model.config.latent_channels}

    def function(self, op: str):
        import jax
        import jax.numpy as jnp

        if op not in self.functions:
            model = self.model
            if op == "encode":

                def fn(params, images):
                    posterior = model.apply({"params": params}, images, method=model.encode).latent_dist
                    return jnp.transpose(posterior.mean, (0, 3, 1, 2))  # the Flax posterior is NHWC
            elif op == "decode":

                def fn(params, latents):
                    # decode treats an input whose last axis has latent_channels entries as NHWC, so an NCHW input
                    # that happens to be that wide would be misread: hand it NHWC, as its own forward does.
                    latents = jnp.transpose(latents, (0, 2, 3, 1))
                    return model.apply({"params": params}, latents, method=model.decode).sample
            else:
                raise ValueError(f"unknown op {op!r} (encode or decode)")
            self.functions[op] = jax.jit(fn)
        return self.functions[op]

    def run(self, op: str, input: str, output: str | None = None) -> dict:
        import jax.numpy as jnp

        if self.model is None:
            raise RuntimeError("load a model first")
        fn = self.function(op)
        x = jnp.asarray(np.load(input), dtype=self.dtype)
        key = (op, tuple(x.shape), self.dtype)
        first_call = key not in self.seen
        seconds, out = timed(lambda: fn(self.params, x))
        self.seen.add(key)
        if output is None:
            self.outputs += 1
            output = os.path.join(self.scratch, f"output_{self.outputs}.npy")
        np.save(output, np.asarray(out.astype(jnp.float32)))
        return {"seconds": seconds, "output": output, "first_call": first_call}

    def loss_function(self):
        import jax.numpy as jnp

        model = self.model

        def loss(params, images):
            posterior = model.apply({"params": params}, images, method=model.encode).latent_dist
            reconstruction = model.apply({"params": params}, posterior.mode(), method=model.decode).sample
            return jnp.mean((reconstruction.astype(jnp.float32) - images.astype(jnp.float32)) ** 2)

        return loss

    def grad(self, shape=None, input=None, repeats: int = 5, seed: int = 0, save_grads: str | None = None) -> dict:
        import jax
        import jax.numpy as jnp

        if self.model is None:
            raise RuntimeError("load a model first")
        if input is not None:
            x_np = np.load(input)
        else:
            x_np = np.random.default_rng(seed).uniform(-1, 1, tuple(shape)).astype(np.float32)
        x = jnp.asarray(x_np, dtype=self.dtype)
        key = (tuple(x.shape), self.dtype)
        result = {"shape": list(x.shape), "dtype": self.dtype, "first_call": key not in self.grads}
        if key not in self.grads:
            loss = self.loss_function()
            grad_fn = jax.jit(jax.grad(loss))
            result["first_call_s"], _ = timed(lambda: grad_fn(self.params, x))
            # A fresh jit of a fresh grad, so nothing traced or compiled above is reused.
            aot = jax.jit(jax.grad(self.loss_function()))
            start = time.perf_counter()
            lowered = aot.lower(self.params, x)
            result["lower_s"] = time.perf_counter() - start
            start = time.perf_counter()
            lowered.compile()
            result["compile_s"] = time.perf_counter() - start
            self.grads[key] = grad_fn
        grad_fn = self.grads[key]
        steps = []
        for _ in range(repeats):
            seconds, grads = timed(lambda: grad_fn(self.params, x))
            steps.append(seconds)
        result["step_times_s"] = steps
        if steps:
            result["step_s"] = statistics.median(steps)
        if save_grads is not None:
            from flax.traverse_util import flatten_dict

            grads = grad_fn(self.params, x)
            flat = flatten_dict(jax.device_get(grads), sep="/")
            np.savez(save_grads, **{name: np.asarray(value, np.float32) for name, value in flat.items()})
            result["loss"] = float(jax.jit(self.loss_function())(self.params, x))
            result["grads"] = save_grads
        return result

    def versions(self) -> dict:
        import diffusers
        import flax
        import jax
        import jaxlib

        return {
            "python": sys.version.split()[0],
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "diffusers": diffusers.__version__,
            "numpy": np.__version__,
            "devices": [str(device) for device in jax.devices()],
        }


def main() -> None:
    # Keep stdout for the protocol: anything else that prints (libraries, XLA) goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = Worker()
    commands = {"load": worker.load, "run": worker.run, "grad": worker.grad, "versions": worker.versions}
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
                cmd = request.pop("cmd")
                if cmd == "quit":
                    protocol.write(json.dumps({"ok": True}) + "\n")
                    break
                if cmd not in commands:
                    raise ValueError(f"unknown cmd {cmd!r}")
                response = {"ok": True, **commands[cmd](**request)}
            except Exception as error:  # reported to the client, which raises it
                log(traceback.format_exc())
                response = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            protocol.write(json.dumps(response) + "\n")
    finally:
        worker.close()


if __name__ == "__main__":
    main()
