"""diffusers 0.35.2's FlaxAutoencoderKL, run in its own venv, as a peer for eqx_vae's benchmarks.

    from flax_peer import FlaxPeer, default_python

    with FlaxPeer(default_python()) as peer:
        peer.load(directory, "float32")  # a diffusers AutoencoderKL folder
        seconds, latents, first_call = peer.run("encode", images)  # NCHW numpy in and out
        figures = peer.grad((2, 3, 64, 64), repeats=5)

The venv comes from `examples/benchmarks/make_flax_peer_venv.sh`; `flax_peer_worker.py` runs in it and answers one
JSON line per request. Times are measured inside the worker, so the pipe and file transfers are not counted.
"""

import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "flax_peer_worker.py")
DEFAULT_VENV = os.path.join(os.path.expanduser("~"), ".cache", "eqx_vae", "flax-peer-venv")


def default_python() -> str | None:
    """The default Flax peer venv's python, or None if that venv has not been made."""
    python = os.path.join(DEFAULT_VENV, "bin", "python")
    return python if os.path.isfile(python) else None


class FlaxPeerError(RuntimeError):
    pass


class FlaxPeer:
    """A FlaxAutoencoderKL worker process; close it (or use `with`) when done."""

    def __init__(self, python_path: str, env: dict | None = None):
        if not python_path or not os.path.isfile(python_path):
            raise FileNotFoundError(
                f"no Flax peer python at {python_path!r}: run examples/benchmarks/make_flax_peer_venv.sh first"
            )
        self.python_path = python_path
        self.scratch = tempfile.mkdtemp(prefix="flax-peer-client-")
        self.process = subprocess.Popen(
            [python_path, WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )

    def request(self, cmd: str, **fields) -> dict:
        """Sends one request and returns the worker's answer; raises FlaxPeerError on its errors."""
        if self.process.poll() is not None:
            raise FlaxPeerError(f"the Flax peer has exited (code {self.process.returncode}); see its stderr")
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise FlaxPeerError(f"the Flax peer exited during {cmd!r} (code {self.process.wait()}); see its stderr")
        response = json.loads(line)
        if not response.pop("ok"):
            raise FlaxPeerError(f"Flax peer {cmd}: {response['error']}")
        return response

    def load(self, directory: str, dtype: str = "float32") -> dict:
        """Loads a diffusers AutoencoderKL folder with `FlaxAutoencoderKL.from_pretrained(..., from_pt=True)`."""
        return self.request("load", directory=os.path.abspath(directory), dtype=dtype)

    def run(self, op: str, array: np.ndarray) -> tuple[float, np.ndarray, bool]:
        """(seconds, output, first_call) of one jitted encode (images -> posterior mean) or decode (latents ->
        images), NCHW float32 in and out. `first_call` says the time includes tracing and compiling."""
        path = os.path.join(self.scratch, f"{op}_input.npy")
        np.save(path, np.asarray(array, np.float32))
        output = os.path.join(self.scratch, f"{op}_output.npy")
        response = self.request("run", op=op, input=path, output=output)
        return response["seconds"], np.load(output), response["first_call"]

    def grad(
        self, shape=None, repeats: int = 5, *, images: np.ndarray | None = None, seed: int = 0, grads: bool = False
    ) -> dict:
        """Times `jax.jit(jax.grad(loss))` w.r.t. the params, loss = MSE(decode(encode(x).mean), x).

        x is `images` or uniform noise in [-1, 1] of `shape`. The first request per shape reports `first_call_s`
        (trace + compile + run) and an AOT split (`lower_s`, `compile_s`); every request times `repeats` more steps
        (`step_times_s`, median `step_s`). `grads=True` adds the loss and `grads`: the gradients by Flax param path
        (`encoder/conv_in/kernel`, kernels in Flax's layout)."""
        fields = {"repeats": repeats, "seed": seed}
        if images is not None:
            fields["input"] = os.path.join(self.scratch, "grad_input.npy")
            np.save(fields["input"], np.asarray(images, np.float32))
        else:
            fields["shape"] = list(shape)
        if grads:
            fields["save_grads"] = os.path.join(self.scratch, "grads.npz")
        response = self.request("grad", **fields)
        if grads:
            with np.load(response["grads"]) as file:
                response["grads"] = {name: file[name] for name in file.files}
        return response

    def versions(self) -> dict:
        return self.request("versions")

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.request("quit")
            except (FlaxPeerError, OSError):
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> "FlaxPeer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
