"""Installation script for hyperrecon-jax."""

import setuptools

EXTRAS = {
    # The embedded MNI152 dataset and the TFDS/grain pipeline (no TensorFlow).
    "data": [
        "nilearn>=0.11",
        "nibabel>=5.2",
        "h5py>=3.10",
        # 4.9.10 reads its dataset_info.json under protobuf 7 (4.9.8 did
        # not), and from 4.9.8 on TFDS no longer asks Google Cloud Storage.
        "tensorflow-datasets>=4.9.10",
        # TFDS's builder imports it on every Python but declares it only
        # below 3.9.
        "importlib-resources>=5.12",
        "array-record>=0.7.1",
        "grain>=0.2.9",
        "tqdm>=4.66",
    ],
    # Figures and TensorBoard event files.
    "viz": ["matplotlib>=3.8", "tensorboardX>=2.6.2.2"],
    # Independent references used by the tests, and the linter they run
    # (its rules change between minor versions: ruff.toml is written for 0.17).
    # selenium drives Debian's chromium in tests/test_explorer_browser.py
    # (apt-get install chromium chromium-driver; nothing is downloaded).
    # PyWavelets is the independent reference of the wavelet tests
    # (tests/test_wavelets.py); the library's transform does not use it.
    # pytest-xdist runs the suite in two processes (`-n 2`): most of its time
    # is XLA compiling on one core.
    "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-image>=0.22", "PyWavelets>=1.5",
             "ruff>=0.17,<0.18", "selenium>=4.20"],
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
    # Each lower bound here and in EXTRAS is a version the test suite passed
    # with, all of them at once (`bash .ci/oldest`, docs/changelog.md).
    install_requires=[
        "jax>=0.6.1",
        "flax>=0.10.6",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11.13",
        "numpy>=1.26",
        "scipy>=1.11.1",
        "absl-py>=2.1",
        "ml-collections>=1.1",
    ],
    extras_require=EXTRAS,
)
