"""Build relay, compiling relay._fastpath from Cython when it can.

Without a C compiler (or Cython), or with RELAY_PUREPYTHON=1 set at build time, the package is
installed with its pure-Python twin only, and the build says so.  Metadata is in pyproject.toml.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _say(message):
    sys.stderr.write(f"relay build: {message}\n")


class OptionalBuildExt(build_ext):
    """Build the extension, but fall back to pure Python when compiling is impossible."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            _say(f"could not build relay._fastpath ({exc}); installing the pure-Python twin")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            _say(f"could not compile {ext.name} ({exc}); installing the pure-Python twin")


def _extensions():
    if os.environ.get("RELAY_PUREPYTHON", "") not in ("", "0"):
        _say("RELAY_PUREPYTHON is set: installing the pure-Python twin only")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say("Cython is not available: installing the pure-Python twin only")
        return []
    ext = Extension(
        "relay._fastpath",
        ["relay/_fastpath.pyx"],
        extra_compile_args=["-O3"],
    )
    return cythonize(
        [ext],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        quiet=True,
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
