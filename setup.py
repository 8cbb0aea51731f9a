"""Build step: ship the top-level `prompts/` inside the package as `synth/prompt_files`,
so an installed wheel has the prompt templates (metadata lives in pyproject.toml)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithPrompts(build_py):
    def run(self):
        super().run()
        source = Path(__file__).resolve().parent / "prompts"
        if source.is_dir():  # an sdist carries prompts/ too (MANIFEST.in)
            shutil.copytree(source, Path(self.build_lib) / "synth" / "prompt_files", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithPrompts})
