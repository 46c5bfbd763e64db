"""The opt-in `deepspeed` distribution: DeepSpeed's module paths over deepspeed_ext.

    pip install --no-build-isolation ./compat/deepspeed     (after deepspeed_ext itself)

Its version is deepspeed_ext's COMPAT_VERSION, e.g. 0.19.8+dsext.0.1.0: the DeepSpeed API
level it implements, and a local label naming this project. It requires exactly the
deepspeed-ext of the same checkout. Being a distribution named `deepspeed`, pip replaces a
real DeepSpeed when this is installed (and the other way round): the two never mix.
"""

from pathlib import Path

from setuptools import find_packages, setup

VERSION_FILE = Path(__file__).resolve().parents[2] / "deepspeed_ext" / "version.py"
versions: dict = {}
exec(VERSION_FILE.read_text(), versions)  # noqa: S102 (our own version file: one source for both versions)

setup(version=versions["COMPAT_VERSION"], install_requires=[f"deepspeed-ext=={versions['__version__']}"],
      packages=find_packages(include=["deepspeed", "deepspeed.*"]))
