"""Where the compiled backend's compile cache goes.

The GPU sweep gives every row a fresh DREAMCAM_ENGINES_DIR so that each start is cold, and the
README promises later starts reuse the cache under the engines folder. Both rest on
`use_compile_cache`, which must not mistake the default that torch itself writes into
TORCHINDUCTOR_CACHE_DIR for a folder the user chose: importing torch._dynamo (diffusers does,
so every dreamcam process has) calls Inductor's `cache_dir()`, which sets the variable.
"""

from __future__ import annotations

from torch._inductor.runtime.cache_dir_utils import cache_dir

from dreamcam.backends.compiled.backend import use_compile_cache


def test_the_compile_cache_goes_under_the_engines_folder_after_torch_set_its_default(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("DREAMCAM_ENGINES_DIR", str(tmp_path / "engines"))
    cache_dir()  # what `import torch._dynamo` runs (torch/_dynamo/package.py), here explicitly
    assert use_compile_cache() == str(tmp_path / "engines" / "torch_compile")
    assert cache_dir() == str(tmp_path / "engines" / "torch_compile")  # where Inductor now writes


def test_a_cache_folder_the_user_chose_is_kept(tmp_path, monkeypatch):
    mine = str(tmp_path / "mine")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", mine)
    monkeypatch.setenv("DREAMCAM_ENGINES_DIR", str(tmp_path / "engines"))
    assert use_compile_cache() == mine
