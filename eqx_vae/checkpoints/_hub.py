"""Repo ids (`stabilityai/sd-vae-ft-mse`) resolved to a snapshot already in the local Hugging Face cache.

Nothing is downloaded: the lookup runs with `local_files_only=True`, through `huggingface_hub` (optional extra
`hub`). The cache is `cache_dir`, else `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, read at
call time.
"""

import os
import re

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")


def looks_like_repo_id(text: str) -> bool:
    """`org/name`, and not a path that exists on disk."""
    return bool(_REPO_ID.fullmatch(text)) and not os.path.exists(text) and ".." not in text


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> str:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def cached_snapshot(repo_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> str:
    """The local snapshot folder of `repo_id` (at `revision`, default `main`) in the Hugging Face cache.

    Raises FileNotFoundError naming the cache folder it looked in when the snapshot isn't there.
    """
    try:
        import huggingface_hub
    except ImportError as error:
        raise ImportError(
            f"{repo_id!r} is no local path, and loading it as a repo id from the Hugging Face cache needs "
            "huggingface_hub: pip install \"eqx_vae[hub]\""
        ) from error
    cache = hub_cache_dir(cache_dir)
    folder = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    try:
        return huggingface_hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache, local_files_only=True
        )
    except Exception as error:  # LocalEntryNotFoundError, or a broken cache entry
        raise FileNotFoundError(
            f"{repo_id!r} is no local path, and not in the local Hugging Face cache (revision {revision or 'main'}): "
            f"looked in {folder} "
            f"(cache {cache}, from cache_dir / HF_HUB_CACHE / HF_HOME). eqx_vae never downloads; fetch it on a "
            f"machine with network access, e.g. `hf download {repo_id}`, or pass a local folder ({error})"
        ) from error
