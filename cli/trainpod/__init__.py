"""trainpod: containerized fine-tuning on your machine, a local Docker engine, or RunPod GPU pods.

This package is the launcher and the shared core the trainer imports. It must stay light: nothing
here imports torch, transformers, peft or deepspeed, and boto3/docker/runpod are imported only
inside the functions that need them.
"""

__version__ = "0.1.0"
