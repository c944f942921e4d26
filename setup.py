"""Installation script for hyperrecon-jax."""

import setuptools

EXTRAS = {
    # The embedded MNI152 dataset and the TFDS/grain pipeline (no TensorFlow).
    "data": [
        "nilearn>=0.10",
        "nibabel>=5",
        "h5py>=3",
        "tensorflow-datasets>=4.9.3",
        "array-record>=0.5",
        "grain>=0.2",
        "tqdm>=4",
    ],
    # Figures and TensorBoard event files.
    "viz": ["matplotlib>=3.7", "tensorboardX>=2.6"],
    # Independent references used by the tests, and the linter they run
    # (its rules change between minor versions: ruff.toml is written for 0.17).
    # selenium drives Debian's chromium in tests/test_explorer_browser.py
    # (apt-get install chromium chromium-driver; nothing is downloaded).
    # PyWavelets is the independent reference of the wavelet tests
    # (tests/test_wavelets.py); the library's transform does not use it.
    # pytest-xdist runs the suite in two processes (`-n 2`): most of its time
    # is XLA compiling on one core.
    "test": ["pytest>=7", "pytest-xdist>=3", "scikit-image>=0.21", "PyWavelets>=1.4",
             "ruff>=0.17,<0.18", "selenium>=4.10"],
}
EXTRAS["all"] = sorted({p for group in EXTRAS.values() for p in group})

setuptools.setup(
    name="hyperrecon-jax",
    version="0.1.0",
    description=(
        "HyperRecon in JAX/Flax: one hypernetwork-conditioned Unet that "
        "reconstructs images for any loss-weight hyperparameter."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(
        include=["hyperrecon_jax", "hyperrecon_jax.*"]),
    # The pretrained models: a folder per model (config, weights, info); the
    # λ explorer's page.
    package_data={"hyperrecon_jax.pretrained": ["*/*.json", "*/*.msgpack"],
                  "hyperrecon_jax.explorer": ["static/*.html", "static/*.js"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax>=0.2",
        "orbax-checkpoint>=0.5",
        "numpy>=1.24",
        "scipy>=1.10",
        "absl-py>=1.4",
        "ml-collections>=0.1.1",
    ],
    extras_require=EXTRAS,
)
